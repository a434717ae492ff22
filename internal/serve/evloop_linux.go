package serve

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/poll"
	"github.com/lbbench/lbbench/internal/rawio"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// evloop serves a worker's waiting connections the way nginx does: one
// epoll set of the worker's own (connections level-triggered), one
// goroutine that takes its events in batches and answers with raw system
// calls. A connection costs one epoll_ctl to join; closing it leaves the
// set by itself; timeouts are a sweep, not a timer per connection; other
// goroutines wake the loop through an eventfd.
//
// It waits in one of two ways. When it is the worker's only busy
// goroutine (it also accepts: netpoll, no -sleep, no TLS) it blocks in
// epoll_pwait itself, one wait per batch as nginx's loop, through a raw
// call (the scheduler's entersyscall would make sysmon take the P back on
// every wait), at most 10ms at a time and yielding when idle, so the
// worker's other goroutines (signals, the supervisor's socket) still run.
// Otherwise the set waits in Go's netpoller, which costs the scheduler's
// epoll_pwait on top of the loop's but never keeps other goroutines
// (accepting threads, handed-over connections, sleeping handlers) from
// the P.
type evloop struct {
	s    *Lean
	set  *poll.Set // with an eventfd other goroutines poke the loop through
	f    *os.File
	rc   syscall.RawConn
	poll func(uintptr) bool
	// more: a read filled its buffer, so a connection may still be
	// ready; poll again before waiting.
	more bool
	// raw: the loop blocks in epoll_pwait itself (see above).
	raw atomic.Bool
	// level: the listening socket is level-triggered, one accept per
	// event (a socket of this worker's own); else edge-triggered, accept
	// until EAGAIN, as Go's netpoller (a socket shared by workers, where
	// who is woken is what is measured).
	level bool

	mu    sync.Mutex
	conns []*conn // by descriptor
	open  int

	// sc is the buffers every connection's step borrows (conn.borrow):
	// one read and one output buffer for the worker, not one per
	// connection.
	sc    scratch
	now   time.Time
	every time.Duration // sweep interval
	next  time.Time     // the next sweep or accept retry

	stopping, cut atomic.Bool
	drainSeen     bool
	done          chan struct{}

	// The listening socket in the set (netpoll accept), -1 when none.
	lfd     int
	acc     Acceptor
	serve   func(fd int)
	retryAt time.Time // after a shortage, when to accept again
	// Asking the loop to let go of the listening socket, and its answer.
	letGo      atomic.Bool
	unlistened chan struct{}
	poked      atomic.Bool
}

// An Acceptor is a listening socket the event loop accepts on, and what
// to do when accept fails (the accept side's policy: backoff, counters).
type Acceptor interface {
	// FD is the listening socket; the loop closes it when it lets go.
	FD() int
	// Failed says whether to accept again after err, and after how long.
	Failed(err error) (again bool, wait time.Duration)
	// Accepted notes a successful accept.
	Accepted()
}

func newEvloop(s *Lean) (*evloop, error) {
	set, err := poll.NewWaker(64)
	if err != nil {
		return nil, err
	}
	l := &evloop{s: s, set: set, lfd: -1, sc: *newScratch(), done: make(chan struct{}), unlistened: make(chan struct{})}
	l.f = set.File("evloop") // the netpoller waits on the set
	if l.rc, err = l.f.SyscallConn(); err != nil {
		set.Close()
		return nil, err
	}
	l.poll = l.pollOnce
	l.every = min(max(min(s.headerTimeout, s.idleTimeout)/4, 10*time.Millisecond), time.Second)
	go l.run()
	return l, nil
}

// add makes c wait in the loop: for its request, or for its socket to
// take the rest of a response. Called by the accept loop.
func (l *evloop) add(c *conn) {
	now := time.Now()
	c.headStart = now.UnixNano()
	c.deadline = c.timeout(now, now).UnixNano()
	c.writing = len(c.out) > 0
	if c.writing {
		c.deadline = now.Add(l.s.idleTimeout).UnixNano()
	}
	// Read c before it is published: once in the set, the loop may
	// serve and close it.
	fd, events := c.fd, l.interest(c)
	l.mu.Lock()
	if fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*conn, fd+1-len(l.conns)+len(l.conns)/2)...)
	}
	l.conns[fd] = c
	l.open++
	l.mu.Unlock()
	if err := l.set.Add(fd, events); err != nil {
		l.close(c, shm.CloseError)
	}
}

func (l *evloop) interest(c *conn) uint32 {
	if c.writing {
		return unix.EPOLLOUT
	}
	return unix.EPOLLIN
}

// listen puts a listening socket into the set and makes the loop accept
// on it: edge-triggered when the socket is shared by workers, as Go's
// netpoller registers sockets (every waiter is woken; each accepts until
// EAGAIN); on a socket of the worker's own, when the loop waits by
// itself, level-triggered with one accept per event, as nginx, which the
// kernel cannot tell apart. The loop then waits by itself unless
// connections have goroutines of their own (handlers sleep, or TLS).
func (l *evloop) listen(a Acceptor, serve func(fd int), shared bool) error {
	raw := !l.s.ownGoroutines()
	l.mu.Lock()
	l.acc, l.serve, l.lfd = a, serve, a.FD()
	l.level = raw && !shared
	l.mu.Unlock()
	events := uint32(unix.EPOLLIN)
	if !l.level {
		events |= unix.EPOLLET
	}
	if err := l.set.Add(l.lfd, events); err != nil {
		return fmt.Errorf("epoll_ctl listener: %w", err)
	}
	l.raw.Store(raw)
	l.poke() // connections may be queued already: accept them
	return nil
}

// unlisten asks the loop to take the listening socket out of its set and
// close it; unlistened closes when it has.
func (l *evloop) unlisten() {
	l.letGo.Store(true)
	l.poke()
}

// poke wakes the loop: it looks at its flags and sweeps.
func (l *evloop) poke() {
	l.poked.Store(true)
	l.set.Wake()
}

// run takes events until stopped with no connection left. Between
// batches it sweeps (timeouts), retries accepts after a shortage and
// answers pokes from other goroutines. The set's read deadline is its
// timer.
func (l *evloop) run() {
	// The set and the eventfd stay open until the worker exits: a late
	// poke must not write to a descriptor number reused since.
	defer close(l.done)
	for {
		l.now = time.Now()
		if l.poked.Swap(false) || !l.now.Before(l.next) {
			if l.letGo.Load() && l.lfd >= 0 {
				l.set.Del(l.lfd)
				unix.Close(l.lfd)
				l.lfd = -1
				close(l.unlistened)
			}
			if l.lfd >= 0 && !l.now.Before(l.retryAt) {
				l.retryAt = time.Time{}
				l.acceptAll()
			}
			l.sweep()
			if l.stopping.Load() && l.lfd < 0 && l.count() == 0 {
				return
			}
			l.schedule()
			if !l.raw.Load() {
				l.f.SetReadDeadline(l.next)
			}
		}
		if l.raw.Load() {
			l.waitRaw()
		} else {
			l.rc.Read(l.poll) // returns on a poke, a full batch, or the deadline
		}
	}
}

// waitRaw blocks in epoll_pwait until events come, the next sweep is
// due or 10ms pass, and serves the events; idle, it lets the worker's
// other goroutines run.
func (l *evloop) waitRaw() {
	ms := min(max(int(time.Until(l.next)/time.Millisecond)+1, 0), 10)
	n, err := l.set.WaitMillis(ms)
	if err != nil || n == 0 {
		runtime.Gosched()
		return
	}
	l.serveEvents(n)
}

// pollOnce takes the events ready now and serves them. It returns false
// (wait in the netpoller) when there were none, and after a batch that
// left nothing ready: a connection that gets ready later wakes the set
// again. It returns true (back to run) on a poke or a full batch.
func (l *evloop) pollOnce(uintptr) bool {
	n, err := l.set.WaitMillis(0)
	if err != nil || n == 0 {
		return false
	}
	l.serveEvents(n)
	return l.more || l.poked.Load()
}

// serveEvents serves the first n events of a wait.
func (l *evloop) serveEvents(n int) {
	l.now = time.Now()
	l.more = n == len(l.set.Events)
	for i := range n {
		if ev := l.set.Events[i]; !l.set.Woken(ev.Fd) {
			l.ready(int(ev.Fd))
		}
	}
}

// acceptAll accepts until the queue is empty (edge-triggered; one
// connection when level-triggered), serving each connection; after a
// shortage it tries again later, from the loop's timer, so the loop
// never sleeps.
func (l *evloop) acceptAll() {
	for first := true; (first || !l.level) && !l.letGo.Load() && l.retryAt.IsZero(); first = false {
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.lfd), 0, 0, sockets.AcceptFlags, 0, 0)
		if e == unix.EAGAIN {
			return
		}
		if e != 0 {
			again, wait := l.acc.Failed(e)
			if !again {
				l.letGo.Store(true)
				l.poke()
				return
			}
			if wait > 0 {
				l.retryAt = l.now.Add(wait)
			}
			continue
		}
		l.acc.Accepted()
		l.serve(int(r))
	}
}

// schedule sets when the loop next sweeps: every interval, every 10ms
// while stopping, or at an accept retry, whichever comes first.
func (l *evloop) schedule() {
	l.next = l.now.Add(l.every)
	if l.stopping.Load() {
		l.next = l.now.Add(10 * time.Millisecond)
	}
	if !l.retryAt.IsZero() && l.retryAt.Before(l.next) {
		l.next = l.retryAt
	}
}

func (l *evloop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// ready serves one connection the set says is readable or writable, or
// accepts what the listening socket has.
func (l *evloop) ready(fd int) {
	if fd == l.lfd {
		l.acceptAll()
		return
	}
	l.mu.Lock()
	var c *conn
	if fd < len(l.conns) {
		c = l.conns[fd]
	}
	l.mu.Unlock()
	if c == nil {
		return
	}
	if c.writing {
		if err := c.flush(); err != nil {
			if err != unix.EAGAIN {
				l.close(c, closeReasonFor(err))
			}
			return
		}
		c.writing = false
		if c.closing {
			l.close(c, c.closeReason)
			return
		}
		l.modify(c)
		if c.filled == 0 {
			c.giveBack()
			l.rearm(c)
			return
		}
		// Requests read while writing: answer them now.
		c.borrow(&l.sc)
	} else {
		c.borrow(&l.sc)
		want := len(c.buf) - c.filled
		n, err := rawio.TryRead(fd, c.buf[c.filled:])
		if err == unix.EAGAIN {
			c.giveBack()
			return
		}
		if n == want {
			l.more = true // more may be waiting in the socket
		}
		if err != nil {
			l.close(c, closeReasonFor(err))
			return
		}
		if c.filled == 0 && c.discard == 0 {
			c.headStart = l.now.UnixNano()
		}
		c.filled += n
	}
	c.process()
	if err := c.flush(); err != nil {
		if err != unix.EAGAIN {
			l.close(c, closeReasonFor(err))
			return
		}
		c.giveBack()
		c.writing = true
		c.deadline = l.now.Add(l.s.idleTimeout).UnixNano() // a send timeout, as nginx's send_timeout
		l.modify(c)
		return
	}
	if c.closing {
		l.close(c, c.closeReason)
		return
	}
	c.giveBack()
	l.rearm(c)
}

// rearm sets the timeout of a connection that now waits for a request.
func (l *evloop) rearm(c *conn) {
	c.deadline = c.timeout(l.now, time.Unix(0, c.headStart)).UnixNano()
}

func (l *evloop) modify(c *conn) {
	if err := l.set.Mod(c.fd, l.interest(c)); err != nil {
		l.close(c, shm.CloseError)
	}
}

// close takes c out of the loop and closes it (which also takes it out
// of the epoll set).
func (l *evloop) close(c *conn, reason int) {
	l.mu.Lock()
	if l.conns[c.fd] == c {
		l.conns[c.fd] = nil
		l.open--
	}
	l.mu.Unlock()
	c.finish(reason)
}

// sweep closes the connections whose timeout ran out. When a stop began,
// every connection's timeout is first set anew.
func (l *evloop) sweep() {
	now := l.now.UnixNano()
	draining := l.s.draining.Load()
	cut := l.cut.Load()
	l.mu.Lock()
	var due []*conn
	for _, c := range l.conns {
		if c == nil {
			continue
		}
		if draining && !l.drainSeen && !c.writing {
			c.deadline = c.timeout(l.now, time.Unix(0, c.headStart)).UnixNano()
		}
		if cut || (c.deadline != 0 && c.deadline <= now) {
			due = append(due, c)
		}
	}
	if draining {
		l.drainSeen = true
	}
	l.mu.Unlock()
	for _, c := range due {
		reason := shm.CloseDrain
		switch {
		case cut:
		case c.writing:
			reason = shm.CloseError // the client did not take its response in time
		default:
			reason = c.timedOut()
		}
		l.close(c, reason)
	}
}

// drain lets the loop finish its connections within grace (see
// Lean.Drain), then closes the rest. It returns false if it had to.
func (l *evloop) drain(grace time.Duration) bool {
	l.stopping.Store(true)
	l.poke() // the loop sweeps
	select {
	case <-l.done:
		return true
	case <-time.After(grace):
	}
	l.cut.Store(true)
	l.poke()
	<-l.done
	return false
}
