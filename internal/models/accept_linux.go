package models

import (
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/variant"
)

// Accept strategies for workers that call accept themselves (shared and
// reuseport). Each lives in its own file: accept_netpoll_linux.go,
// accept_blocking_linux.go, accept_exclusive_linux.go.
const (
	AcceptNetpoll   = "netpoll"   // Go's netpoller (one epoll per process, edge-triggered)
	AcceptBlocking  = "blocking"  // accept4 on a blocking socket, on a locked OS thread
	AcceptExclusive = "exclusive" // the worker's own epoll with EPOLLEXCLUSIVE, then accept4
)

// AcceptStrategies lists the accept strategies.
var AcceptStrategies = variant.List{AcceptNetpoll, AcceptBlocking, AcceptExclusive}

// pollTimeout is how often a worker blocked in accept or epoll_wait
// looks up to see whether it should stop.
const pollTimeout = 250 * time.Millisecond

// newAcceptSource returns the source that accepts on the listening
// socket lfd (which it then owns) for worker w with the named strategy;
// netpoll accepts in the worker's event loop, or with -http nethttp in
// http.Server.Serve. shared says every worker accepts on this socket.
func newAcceptSource(strategy string, lfd int, w *worker, shared bool) (source, error) {
	ino, err := sockets.Inode(lfd)
	if err != nil {
		return nil, err
	}
	if w.spec.Proto == ProtoUDP {
		return newUDPSource(strategy, lfd, ino, w)
	}
	switch {
	case strategy == AcceptNetpoll && w.std != nil:
		return newListenerSource(w.std, lfd, ino)
	case strategy == AcceptNetpoll:
		return newNetpollSource(lfd, ino, w.slot, w.lean, shared)
	case strategy == AcceptBlocking:
		return newBlockingSource(lfd, ino, w.slot)
	case strategy == AcceptExclusive:
		return newExclusiveSource(lfd, ino, w.slot)
	}
	return nil, fmt.Errorf("unknown accept strategy %q", strategy)
}

// acceptor is what the strategies share: the listening socket, the stop
// flag, and what to do when accept fails.
type acceptor struct {
	lfd      int
	ino      uint64
	slot     *shm.Slot
	stopping atomic.Bool

	backoff    time.Duration
	lastLog    time.Time
	suppressed int
}

func (a *acceptor) inode() uint64 { return a.ino }

// stop makes a thread-blocking strategy's loop end at its next wake-up
// (at most pollTimeout away).
func (a *acceptor) stop() { a.stopping.Store(true) }

// took handles what one accept4 returned: the connection is served, a
// failure counted (see retry). It returns false when the loop is to end.
func (a *acceptor) took(r uintptr, e unix.Errno, serve func(fd int)) bool {
	if e != 0 {
		return a.retry(e)
	}
	a.Accepted()
	serve(int(r))
	return true
}

// FD is the listening socket (serve.Acceptor).
func (a *acceptor) FD() int { return a.lfd }

// retry handles a failed accept: it counts the failure and, for a
// shortage, pauses before the caller tries again. It returns false for
// errors that end the accept loop.
func (a *acceptor) retry(err error) bool {
	again, wait := a.Failed(err)
	time.Sleep(wait)
	return again
}

// Failed counts a failed accept and says whether to try again, and after
// how long. A shortage (descriptors, memory) leaves the connection in the
// kernel's queue: the worker pauses (5 ms, doubling to 1 s, as net/http
// does) and tries again, logging at most once a second. A client that
// gave up before accept costs nothing. Any other error ends the loop.
func (a *acceptor) Failed(err error) (again bool, wait time.Duration) {
	word := -1
	switch err {
	case unix.EINTR, unix.EAGAIN:
		return true, 0
	case unix.ECONNABORTED, unix.EPROTO:
		a.slot.Add(shm.AcceptAborted, 1)
		return true, 0
	case unix.EMFILE, unix.ENFILE:
		word = shm.AcceptFDLimit
	case unix.ENOBUFS, unix.ENOMEM:
		word = shm.AcceptNoMemory
	default:
		log.Printf("accept: %v; this worker stops accepting", err)
		return false, 0
	}
	a.slot.Add(word, 1)
	a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
	a.note(fmt.Sprintf("%v; retrying in %v", err, a.backoff))
	return true, a.backoff
}

// note logs an accept that had to wait, at most once a second.
func (a *acceptor) note(what string) {
	now := time.Now()
	if now.Sub(a.lastLog) < time.Second {
		a.suppressed++
		return
	}
	more := ""
	if a.suppressed > 0 {
		more = fmt.Sprintf(" (%d more since the last report)", a.suppressed)
	}
	log.Printf("accept: %s%s; connections stay queued", what, more)
	a.lastLog, a.suppressed = now, 0
}

// Accepted resets the backoff after a successful accept.
func (a *acceptor) Accepted() { a.backoff = 0 }

// checkListener checks a listening socket a worker is to accept on: its
// protocol (plain TCP unless mptcp) and its O_NONBLOCK flag, which the
// blocking strategy wants clear and the others set. The flag lives on the
// open file description that inheriting holders share, so it is checked
// in every worker.
func checkListener(fd int, c *Config, id int) error {
	proto, err := sockets.Protocol(fd)
	if err != nil {
		return fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	want := unix.IPPROTO_TCP
	if c.MPTCP {
		want = unix.IPPROTO_MPTCP
	}
	if c.Proto == ProtoUDP {
		want = unix.IPPROTO_UDP
	}
	if proto != want {
		return fmt.Errorf("listening socket has protocol %d, want %d", proto, want)
	}
	blocking := c.Accept == AcceptBlocking
	changed, err := sockets.EnsureBlocking(fd, blocking)
	if err != nil {
		return fmt.Errorf("O_NONBLOCK: %w", err)
	}
	if changed && id == 0 {
		// Expected once: the supervisor hands a shared socket over in
		// blocking mode, and the first worker sets what its strategy
		// needs on the shared file description.
		log.Printf("set O_NONBLOCK=%v on the listening socket for %s accept", !blocking, c.Accept)
	}
	return nil
}
