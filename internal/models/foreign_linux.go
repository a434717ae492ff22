package models

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/sockets"
)

// foreignEvery is how often the target looks for foreign listeners: a
// sock_diag dump of one port is cheap, and /proc is walked only when a
// socket the target does not know appears.
const foreignEvery = 250 * time.Millisecond

// foreignWatch looks for listening sockets on the target's address and
// port that are not the target's own. With SO_REUSEPORT any process of
// the same effective uid may join the group without a sound (a stale
// release, a test binary) and the kernel hands it about 1/(N+1) of the
// new connections, which it may never accept.
type foreignWatch struct {
	s     *Supervisor
	count atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	// known are the sockets seen so far that were not in the model's
	// list: foreign ones carry their owners, ours (a worker not yet
	// listed) an empty entry with ours set.
	known map[uint64]foreignSocket
}

type foreignSocket struct {
	ours   bool
	addr   string
	owners []sockets.Owner
}

func startForeignWatch(s *Supervisor) *foreignWatch {
	w := &foreignWatch{s: s, stop: make(chan struct{}), done: make(chan struct{}), known: map[uint64]foreignSocket{}}
	go w.run()
	return w
}

func (w *foreignWatch) close() {
	close(w.stop)
	<-w.done
}

func (w *foreignWatch) run() {
	defer close(w.done)
	t := time.NewTicker(foreignEvery)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

func (w *foreignWatch) check() {
	s := w.s
	ap, err := sockets.ParseAddr(s.cfg.Addr)
	if err != nil {
		return
	}
	conflicts := sockets.Conflicts
	if s.cfg.Proto == ProtoUDP {
		conflicts = sockets.ConflictsUDP
	}
	ls, err := conflicts(ap)
	if err != nil {
		return
	}
	s.mu.Lock()
	mine := s.model.listeners(s.live())
	s.mu.Unlock()

	present := map[uint64]string{}
	var unknown bool
	for _, l := range ls {
		if _, ok := mine[l.Inode]; ok {
			continue
		}
		present[l.Inode] = l.Addr.String()
		if _, ok := w.known[l.Inode]; !ok {
			unknown = true
		}
	}
	if unknown {
		w.identify(present)
	}
	for ino, f := range w.known {
		if _, ok := present[ino]; !ok {
			delete(w.known, ino)
			if !f.ours {
				s.log.Printf("foreign listener gone: %s on %s (socket %d)", ownerList(f.owners), f.addr, ino)
			}
		}
	}
	var n int64
	for _, f := range w.known {
		if !f.ours {
			n++
		}
	}
	w.count.Store(n)
}

// identify names the owners of the sockets seen for the first time. A
// socket held by a process of the target's own tree is ours (a worker
// that started after the model's list was read).
func (w *foreignWatch) identify(present map[uint64]string) {
	owners, err := sockets.Owners("/proc")
	if err != nil {
		return
	}
	tree, _ := kernel.Proc.Tree(os.Getpid())
	for _, ino := range slices.Sorted(maps.Keys(present)) {
		if _, ok := w.known[ino]; ok {
			continue
		}
		f := foreignSocket{addr: present[ino], owners: owners[ino]}
		f.ours = slices.ContainsFunc(f.owners, func(o sockets.Owner) bool { return slices.Contains(tree, o.PID) })
		w.known[ino] = f
		if !f.ours {
			w.s.log.Printf("warning: foreign listener on %s: %s (socket %d) shares the port", f.addr, ownerList(f.owners), ino)
		}
	}
}

// ownerList names the owners as "pid 123 (python3)".
func ownerList(owners []sockets.Owner) string {
	if len(owners) == 0 {
		return "pid ? (owner not visible)"
	}
	var parts []string
	for _, o := range owners {
		parts = append(parts, fmt.Sprintf("pid %s (%s)", strconv.Itoa(o.PID), o.Comm))
	}
	return strings.Join(parts, ", ")
}
