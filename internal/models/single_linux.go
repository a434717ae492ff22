package models

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/variant"
)

// Dispatch policies of the single model.
const (
	DispatchRR    = "rr"
	DispatchLeast = "least"
)

// Dispatches lists the dispatch policies.
var Dispatches = variant.List{DispatchRR, DispatchLeast}

// single is the model where the supervisor is the only process that
// accepts: it takes every connection off its one listening socket and
// passes the descriptor to a worker over the worker's control socket
// (SCM_RIGHTS), round-robin or to the worker with the fewest open
// connections. Balance is decided in user space; the single accept loop
// is the ceiling.
type single struct {
	cfg  *Config
	lfd  int
	ino  uint64
	f    *os.File // lfd in the supervisor's netpoller
	rc   syscall.RawConn
	stop atomic.Bool
	done chan struct{}

	next  int   // round-robin position
	order []int // dispatch order scratch
}

func newSingle(c *Config) (*single, error) {
	switch {
	case c.Accept != AcceptNetpoll:
		return nil, errors.New("-accept applies to the shared and reuseport models; single uses -dispatch")
	case !Dispatches.Has(c.Dispatch):
		return nil, fmt.Errorf("unknown dispatch %q (want %s)", c.Dispatch, Dispatches.Words())
	}
	if err := checkOwn(c, Single); err != nil {
		return nil, err
	}
	return &single{cfg: c, lfd: -1, done: make(chan struct{})}, nil
}

func (m *single) acceptName() string   { return "supervisor" }
func (m *single) dispatchName() string { return m.cfg.Dispatch }

func (m *single) listen(host) error {
	fd, err := sockets.Listen(m.cfg.Addr, sockets.ListenOptions{Backlog: m.cfg.Backlog, MPTCP: m.cfg.MPTCP})
	if err != nil {
		return err
	}
	m.lfd = fd
	if m.ino, err = sockets.Inode(fd); err != nil {
		return err
	}
	m.f = os.NewFile(uintptr(fd), "listener")
	m.rc, err = m.f.SyscallConn()
	return err
}

// files: a worker of the single model gets its connections over the
// control socket, and nothing else.
func (m *single) files(int) ([]namedFile, error) { return nil, nil }

func (m *single) serve(h host) { go m.acceptLoop(h) }

func (m *single) stopAccepting() {
	if m.f == nil {
		return
	}
	m.stop.Store(true)
	m.f.SetReadDeadline(time.Unix(1, 0))
}

func (m *single) listeners([]*proc) map[uint64]string { return map[uint64]string{m.ino: "0"} }

func (m *single) close() {
	if m.f != nil {
		m.stopAccepting()
		m.f.Close()
	}
}

// acceptLoop takes connections off the listening socket while some
// worker can hold one more, and hands each over.
func (m *single) acceptLoop(h host) {
	a := acceptor{lfd: m.lfd, ino: m.ino, slot: h.ownSlot()}
	waiting := false
	for !m.stop.Load() {
		if !m.roomFor(h) {
			// Every worker is at its descriptor limit: leave the
			// connections queued in the kernel until one has room,
			// counted and logged as an accept that met the limit.
			if !waiting {
				a.slot.Add(shm.AcceptFDLimit, 1)
				a.note("every worker is at its descriptor limit")
			}
			waiting = true
			time.Sleep(time.Millisecond)
			continue
		}
		waiting = false
		var nfd int
		var aerr unix.Errno
		err := m.rc.Read(func(fd uintptr) bool {
			r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, 0, 0, sockets.AcceptFlags, 0, 0)
			nfd, aerr = int(r), e
			return e != unix.EAGAIN
		})
		if err != nil {
			if !m.stop.Load() {
				h.logger().Printf("accept: %v; the supervisor stops accepting", err)
			}
			return
		}
		if aerr != 0 {
			if !a.retry(aerr) {
				return
			}
			continue
		}
		a.Accepted()
		m.handOff(h, nfd)
		unix.Close(nfd) // the worker holds its own reference now, or the connection is dropped
	}
}

// roomFor reports whether some worker can take one more connection.
func (m *single) roomFor(h host) bool {
	procs, _ := h.lockWorkers()
	defer h.unlockWorkers()
	for _, p := range procs {
		if m.hasRoom(h, p) {
			return true
		}
	}
	return false
}

// hasRoom says whether worker process p can take one more connection:
// what it holds or is about to (its open connections plus those sent but
// not yet received) is under its descriptor capacity. The supervisor's
// lock is held.
func (m *single) hasRoom(h host, p *proc) bool {
	return p != nil && p.ctl >= 0 && m.inUse(h, p) < h.slot(p).Load(shm.Capacity)
}

// inUse is what worker process p holds or is about to. The supervisor's
// lock is held.
func (m *single) inUse(h host, p *proc) uint64 {
	slot := h.slot(p)
	return slot.Load(shm.Open) + p.handed - slot.Load(shm.Accepted)
}

// handOff sends fd to the worker the dispatch policy picks. A worker whose
// control socket is full (stalled) or that is at its descriptor limit is
// skipped, as its queue would be in any real dispatcher; when all are,
// it waits. The lock is held while sending so a worker's control
// descriptor cannot be closed (and its number reused) under the send.
func (m *single) handOff(h host, fd int) {
	oob := unix.UnixRights(fd)
	data := []byte{0}
	for attempt := 0; ; attempt++ {
		if m.passTo(h, data, oob) {
			return
		}
		_, stopping := h.lockWorkers()
		h.unlockWorkers()
		if stopping || attempt > 5000 {
			return // dropped: the connection closes with the caller's descriptor
		}
		time.Sleep(time.Millisecond)
	}
}

// passTo sends the descriptor in oob to the first worker in dispatch
// order with room, with the supervisor's lock held; it says whether one
// took it.
func (m *single) passTo(h host, data, oob []byte) bool {
	procs, _ := h.lockWorkers()
	defer h.unlockWorkers()
	for _, id := range m.dispatchOrder(h, procs) {
		p := procs[id]
		if !m.hasRoom(h, p) {
			continue
		}
		err := unix.Sendmsg(p.ctl, data, oob, nil, unix.MSG_DONTWAIT)
		if err == nil {
			p.handed++
			return true
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNREFUSED) {
			h.logger().Printf("pass connection to worker %d: %v", id, err)
		}
	}
	return false
}

// dispatchOrder returns worker ids in the order to try: round-robin from
// the next one, or fewest open connections first. The supervisor's lock
// is held.
func (m *single) dispatchOrder(h host, procs []*proc) []int {
	n := len(procs)
	order := m.order[:0]
	start := m.next
	if m.cfg.Dispatch == DispatchLeast {
		best, bestOpen := start, ^uint64(0)
		for i := range n {
			id := (start + i) % n
			if p := procs[id]; p != nil {
				if open := m.inUse(h, p); open < bestOpen {
					best, bestOpen = id, open
				}
			}
		}
		start = best
	}
	for i := range n {
		order = append(order, (start+i)%n)
	}
	m.order = order
	m.next = (m.next + 1) % n
	return order
}

// source: the worker receives its connections on the control socket.
func (m *single) source(w *worker) (source, error) {
	rc, err := w.ctl.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &handoffSource{w: w, rc: rc}, nil
}

// handoffSource is a single-model worker's end of the hand-off: the
// descriptors the supervisor sends over the control socket.
type handoffSource struct {
	w        *worker
	rc       syscall.RawConn
	stopping atomic.Bool
}

func (h *handoffSource) inode() uint64 { return 0 }

// ownsControl: the hand-off reads the control socket, and so notices the
// supervisor going away itself.
func (h *handoffSource) ownsControl() {}

func (h *handoffSource) run(serve func(fd int)) {
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*maxFDsPerMsg))
	for {
		var n, oobn, flags int
		var rerr error
		err := h.rc.Read(func(fd uintptr) bool {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			// Stopped: the supervisor sends nothing more once it
			// signals, so what is queued now is all there will be.
			// Those connections were accepted; serve them.
			h.rc.Control(func(fd uintptr) {
				for {
					n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
					if rerr != nil || n == 0 {
						return
					}
					h.deliver(oob[:oobn], flags, serve)
				}
			})
			return
		}
		if rerr != nil || n == 0 {
			if !h.stopping.Load() {
				log.Printf("supervisor gone; stopping")
			}
			return
		}
		h.deliver(oob[:oobn], flags, serve)
	}
}

// deliver serves the descriptors of one control message.
func (h *handoffSource) deliver(oob []byte, flags int, serve func(fd int)) {
	if flags&unix.MSG_CTRUNC != 0 {
		// The kernel could not install a descriptor here (out of
		// descriptors): that connection is lost.
		h.w.slot.Add(shm.HandoffLost, 1)
		log.Printf("a handed-over connection was lost: no descriptor free in this worker")
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, msg := range msgs {
		fds, err := unix.ParseUnixRights(&msg)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			serve(fd)
		}
	}
}

func (h *handoffSource) stop() {
	h.stopping.Store(true)
	h.w.ctl.SetReadDeadline(time.Unix(1, 0))
}

// maxFDsPerMsg bounds the descriptors the supervisor packs into one message.
const maxFDsPerMsg = 1
