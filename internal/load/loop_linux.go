package load

import (
	"encoding/binary"
	"io"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/kattr"
	"github.com/lbbench/lbbench/internal/poll"
	"github.com/lbbench/lbbench/internal/rawio"
)

// loop drives a share of the connections from one goroutine, as each of
// wrk's threads does: one epoll set (edge-triggered), raw system calls,
// and per request what the kernel needs and no more: socket, connect,
// epoll_ctl, write, read, close for a new connection; write and read on
// a kept one; one epoll_pwait2 per batch of events. It blocks in the wait
// itself (a raw call, at most 10ms, yielding when idle): the netpoller
// would add the scheduler's own wait and a goroutine switch per request,
// and blocking through the scheduler's entersyscall makes sysmon take the
// P on every wait.
type loop struct {
	set   *poll.Set // with an eventfd that wakes the loop when the run ends
	e     *engine
	sh    *shard
	slots []*slot
	byFD  []*slot
	now   time.Time
	// waiting are open-loop slots holding an intended time still ahead,
	// in order (times come from one schedule, so they only grow).
	waiting []*slot
	// backoff are slots pausing after a refused or failed connect.
	backoff   []*slot
	nextSweep time.Time
	// inFlight and oldest describe the measured requests the end cut.
	inFlight int64
	oldest   time.Time
	active   int // slots with a request under way or waiting to start
	// rbuf is the loop's read buffer: every slot's receive borrows it
	// (slot.borrow), so a connection between requests holds none.
	rbuf []byte
}

// Slot states.
const (
	idle       = iota // no request under way
	waiting           // open loop: its intended time is ahead
	connecting        // connect in progress
	sending           // request partly written
	receiving         // request written, reading the response
	done              // the run is over for this slot
)

// slot is one connection: it carries at most one request at a time.
type slot struct {
	l     *loop
	idx   int
	fd    int // -1: no connection
	state int
	// The request under way.
	intended, start, sent, first time.Time
	connect                      time.Duration
	deadline                     time.Time
	closeAfter                   bool
	out                          []byte // request bytes still to write
	reqs                         int    // requests on this connection so far
	counted                      bool   // this connection was counted for a pid
	// buf is the response bytes read, filled of them: during a receive
	// the loop's read buffer; part keeps a partial head between
	// receives (nil when there is none).
	buf, part    []byte
	filled, head int
	haveHead     bool
	bodyLeft     int64 // Content-Length bytes still due
	chunked      httpwire.Chunked
	parser       *httpwire.ResponseParser
	resp         httpwire.Response
	x            sample
	resumeAt     time.Time // backoff: when to try again
	// Kernel attribution: the connection as the client sees it, when it
	// began (kernel clock), and who accepted it.
	tuple    kattr.Tuple
	connMono int64
	acc      acceptor
	// Serving attribution: bytes read on the connection so far, and
	// the thread that sent its first response.
	rx  int64
	srv server
}

func newLoop(e *engine) (*loop, error) {
	set, err := poll.NewWaker(loopEvents)
	if err != nil {
		return nil, err
	}
	return &loop{set: set, e: e, sh: newShard(), rbuf: make([]byte, readBufSize)}, nil
}

// loopEvents is how many events a loop's wait takes at most.
const loopEvents = 128

// closeSet is called once the loop has stopped (or never ran).
func (l *loop) closeSet() { l.set.Close() }

func (l *loop) stats() *shard                { return l.sh }
func (l *loop) cutCount() (int64, time.Time) { return l.inFlight, l.oldest }

func (l *loop) addSlot(idx int) {
	l.slots = append(l.slots, &slot{l: l, idx: idx, fd: -1,
		parser: httpwire.NewResponseParser(l.e.o.PIDHeader, l.e.o.IDHeader, "X-Conn-Local")})
}

// poke wakes the loop (the run ended).
func (l *loop) poke() { l.set.Wake() }

// run drives the loop's slots until the run ends, then cuts what is
// still in flight.
func (l *loop) run() {
	l.now = time.Now()
	for _, s := range l.slots {
		l.active++
		s.next()
	}
	for l.active > 0 && !l.e.stopped.Load() {
		l.wait()
		l.now = time.Now()
		l.timers()
	}
	l.cut()
}

// wait blocks until events come, a timer is due or 10ms pass, and
// serves the events; idle, it lets the process's other goroutines run.
func (l *loop) wait() {
	timeout := 10 * time.Millisecond
	if len(l.waiting) > 0 {
		timeout = min(timeout, max(l.waiting[0].intended.Sub(l.now), 0))
	}
	if len(l.backoff) > 0 {
		timeout = min(timeout, max(l.backoff[0].resumeAt.Sub(l.now), 0))
	}
	n, err := l.set.Wait(timeout)
	if err != nil || n == 0 {
		runtime.Gosched()
		return
	}
	l.now = time.Now()
	for i := range n {
		ev := l.set.Events[i]
		fd := int(ev.Fd)
		if l.set.Woken(ev.Fd) {
			continue
		}
		if fd < len(l.byFD) && l.byFD[fd] != nil {
			l.byFD[fd].ready(ev.Events)
		}
	}
}

// timers starts open-loop requests whose time has come, ends backoffs,
// and times out requests (every 10ms).
func (l *loop) timers() {
	for len(l.waiting) > 0 && !l.waiting[0].intended.After(l.now) {
		s := l.waiting[0]
		l.waiting = l.waiting[1:]
		s.begin()
	}
	for len(l.backoff) > 0 && !l.backoff[0].resumeAt.After(l.now) {
		s := l.backoff[0]
		l.backoff = l.backoff[1:]
		s.next()
	}
	if l.now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = l.now.Add(10 * time.Millisecond)
	for _, s := range l.slots {
		if s.state >= connecting && s.state <= receiving && l.now.After(s.deadline) {
			s.fail(ErrTimeout)
		}
	}
}

// cut ends the run for every slot: a measured request still waiting is
// counted (with how long the oldest waited), and connections close.
func (l *loop) cut() {
	for _, s := range l.slots {
		if s.state >= connecting && s.state <= receiving && !s.intended.Before(l.e.measureStart) {
			l.inFlight++
			if l.oldest.IsZero() || s.intended.Before(l.oldest) {
				l.oldest = s.intended
			}
		}
		s.closeConn()
		s.state = done
	}
}

// next starts the slot's next request: now in the closed loop, at its
// intended time in the open loop; or retires it when the run is over.
func (s *slot) next() {
	l, e := s.l, s.l.e
	s.state = idle
	if e.stopped.Load() {
		s.retire()
		return
	}
	if e.sched == nil {
		s.intended = l.now
		if !e.end.IsZero() && !s.intended.Before(e.end) {
			s.retire()
			return
		}
		s.begin()
		return
	}
	t, ok := e.sched.Next()
	if !ok {
		s.retire()
		return
	}
	s.intended = t
	if t.After(l.now) {
		s.state = waiting
		l.waiting = append(l.waiting, s)
		return
	}
	s.begin()
}

func (s *slot) retire() {
	s.closeConn()
	s.state = done
	s.l.active--
}

// begin sends the slot's request, connecting first if it has no
// connection.
func (s *slot) begin() {
	l, e := s.l, s.l.e
	if e.o.Requests > 0 && !s.intended.Before(e.measureStart) && e.tickets.Add(1) > e.o.Requests {
		s.retire()
		return
	}
	s.x = sample{}
	s.start = l.now
	s.deadline = l.now.Add(e.o.Timeout)
	s.closeAfter = e.o.Mode == ModeClose || (e.o.ReqsPerConn > 0 && s.reqs+1 >= e.o.ReqsPerConn)
	s.out = e.reqKeep
	if s.closeAfter {
		s.out = e.reqClose
	}
	s.filled, s.head, s.haveHead, s.bodyLeft, s.first, s.part = 0, 0, false, 0, time.Time{}, nil
	if s.fd >= 0 {
		s.send()
		return
	}
	if err := s.dial(e.source()); err != nil {
		s.fail(classify(err))
		return
	}
	s.state = connecting
}

// rawConnect opens a non-blocking socket and starts its connect. The
// calls are raw: none of them blocks on a non-blocking socket, and the
// scheduler's entersyscall would cost more than they do.
// IP_BIND_ADDRESS_NO_PORT lets the kernel choose the local port at
// connect time, per destination (-src).
func rawConnect(e *engine, local netip.Addr) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(e.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if errno != 0 {
		return -1, errno
	}
	fd := int(r)
	if local.IsValid() {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(e.remoteSA), e.remoteLen); errno != 0 && errno != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, errno
	}
	return fd, nil
}

// dial opens a non-blocking socket, connects it and adds it to the set;
// the connection completes when the socket turns writable.
func (s *slot) dial(local netip.Addr) error {
	fd, err := rawConnect(s.l.e, local)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
		return err
	}
	if err := s.l.set.Add(fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		return fail(err)
	}
	s.fd = fd
	for fd >= len(s.l.byFD) {
		s.l.byFD = append(s.l.byFD, make([]*slot, len(s.l.byFD)+64)...)
	}
	s.l.byFD[fd] = s
	s.began(s.l.now)
	return nil
}

// rawSockaddr is ap in the kernel's layout, for a raw connect(2); the
// engine's one remote address is converted once.
func rawSockaddr(ap netip.AddrPort) (family int, sa unsafe.Pointer, size uintptr) {
	if ap.Addr().Is4() {
		rsa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&rsa.Port))[:], ap.Port())
		return unix.AF_INET, unsafe.Pointer(rsa), unix.SizeofSockaddrInet4
	}
	rsa := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&rsa.Port))[:], ap.Port())
	return unix.AF_INET6, unsafe.Pointer(rsa), unix.SizeofSockaddrInet6
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// ready takes an event of the slot's socket.
func (s *slot) ready(events uint32) {
	switch s.state {
	case connecting:
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		s.x.connect = s.l.now.Sub(s.start)
		if s.l.e.kernel {
			// The kernel names acceptors and senders by 4-tuple: learn
			// the local port it chose.
			s.tuple = kattr.Tuple{}
			if local, err := rawio.LocalAddr(s.fd); err == nil {
				s.tuple = kattr.Tuple{Client: local, Server: s.l.e.tupleRemote}
			}
		}
		s.send() // a refused connection fails the write with its error
	case sending:
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			s.send()
		}
	case receiving:
		if events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
			s.receive(events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
		}
	}
}

// send writes the request.
func (s *slot) send() {
	if s.state != sending {
		s.sent = s.l.now
	}
	for len(s.out) > 0 {
		n, err := rawio.TryWrite(s.fd, s.out)
		if err == unix.EAGAIN {
			s.state = sending
			return
		}
		if err != nil {
			s.fail(classify(err))
			return
		}
		s.out = s.out[n:]
	}
	// The response comes later, with its own edge: no read now.
	s.state = receiving
}

// receive reads what the socket has and finishes the request once its
// response is whole. hangup says the peer closed (or failed): read on to
// the end, since no later event will say so again.
func (s *slot) receive(hangup bool) {
	s.borrow(s.l.rbuf)
	for {
		var n int
		var err error
		if !s.haveHead {
			n, err = rawio.TryRead(s.fd, s.buf[s.filled:])
		} else {
			n, err = rawio.TryRead(s.fd, s.buf) // body bytes: counted, not kept
		}
		if err == unix.EAGAIN {
			s.giveBack()
			return
		}
		if err != nil {
			s.failRead(err)
			return
		}
		s.rx += int64(n)
		if s.first.IsZero() {
			s.first = s.l.now
		}
		room := len(s.buf) - s.filled
		if s.haveHead {
			room = len(s.buf)
		}
		complete, kind := s.consume(n)
		switch {
		case kind != "":
			s.fail(kind)
			return
		case complete:
			s.finish()
			return
		case n < room && !hangup:
			s.giveBack()
			return // the socket is empty; an edge comes with more
		}
	}
}

// readBufSize holds the largest head and a read's worth of body.
const readBufSize = httpwire.MaxHead + 4096

// borrow makes rb, a read buffer of the loop's (or of a TLS slot's
// request), the slot's for one receive, with the partial head the slot
// kept moved to its start.
func (s *slot) borrow(rb []byte) {
	if s.part != nil {
		copy(rb, s.part)
		s.part = nil
	}
	s.buf = rb
}

// giveBack ends a receive that left the response unfinished: a partial
// head moves to storage of the slot's own, sized for it (body bytes are
// counted, never kept).
func (s *slot) giveBack() {
	if !s.haveHead && s.filled > 0 {
		s.part = append([]byte(nil), s.buf[:s.filled]...)
	}
	s.buf = nil
}

// consume takes n new bytes: the head (skipping interim 1xx responses),
// then the body by its framing. It returns whether the response is whole.
func (s *slot) consume(n int) (complete bool, kind string) {
	if s.haveHead {
		return s.body(s.buf[:n])
	}
	s.filled += n
	for {
		h, err := s.parser.Parse(s.buf[:s.filled], false, &s.resp)
		if err != nil {
			return false, ErrMalformed
		}
		if h == 0 {
			if s.filled == len(s.buf) {
				return false, ErrMalformed
			}
			return false, ""
		}
		if s.resp.Interim() {
			copy(s.buf, s.buf[h:s.filled])
			s.filled -= h
			continue
		}
		s.head = h
		break
	}
	// The pid and worker id alias the buffer: take them before body
	// bytes overwrite it.
	x := &s.x
	x.pid, x.badPID = workerPID(s.resp.Values[0])
	if x.badPID {
		x.bad = append(x.bad[:0], s.resp.Values[0]...)
	}
	x.local, x.workerID = -1, 0
	if s.l.e.o.FairBy == FairWorker {
		if id, ok := httpwire.ParseUint(s.resp.Values[1]); ok && len(s.resp.Values[1]) > 0 {
			x.workerID = id + 1
		}
	}
	if !s.counted && !x.badPID {
		if len(s.resp.Values[1]) > 0 {
			x.worker = append(x.worker[:0], s.resp.Values[1]...)
		}
		if v := s.resp.Values[2]; len(v) == 1 && (v[0] == '0' || v[0] == '1') {
			x.local = int8(v[0] - '0')
		}
	}
	s.haveHead = true
	s.bodyLeft = s.resp.BodyLen
	s.chunked = httpwire.Chunked{}
	return s.body(s.buf[s.head:s.filled])
}

// body accounts for body bytes p.
func (s *slot) body(p []byte) (complete bool, kind string) {
	switch {
	case s.resp.Chunked:
		k, done, err := s.chunked.Feed(p)
		if err != nil {
			return false, ErrMalformed
		}
		if done && k < len(p) {
			s.resp.Close = true // bytes no request asked for
		}
		return done, ""
	case s.resp.BodyLen < 0:
		return false, "" // until the close
	}
	s.bodyLeft -= int64(len(p))
	if s.bodyLeft < 0 {
		s.resp.Close = true
	}
	return s.bodyLeft <= 0, ""
}

// failRead handles a read error: a close ends a body that runs to the
// close; a close mid-head after some bytes is malformed; otherwise the
// error's kind.
func (s *slot) failRead(err error) {
	if err == io.EOF {
		switch {
		case s.haveHead && s.resp.BodyLen < 0 && !s.resp.Chunked:
			s.resp.Close = true
			s.finish()
			return
		case !s.haveHead && s.filled > 0:
			s.fail(ErrMalformed)
			return
		}
	}
	s.fail(classify(err))
}

// finish records a whole response and moves on.
func (s *slot) finish() {
	done := s.l.now
	s.reqs++
	status := s.resp.Status
	if s.resp.Close || s.closeAfter {
		s.closeConn()
	}
	s.complete(status, done)
	s.next()
}

// complete fills in and records the sample of a whole response (one
// that is not 2xx is an error of kind status); both drivers, epoll and
// TLS, end a request here.
func (s *slot) complete(status int, done time.Time) {
	e := s.l.e
	x := &s.x
	if status < 200 || status > 299 {
		x.err = ErrStatus
	} else {
		if e.kernel {
			s.attribute(s.resp.Close || s.closeAfter)
		}
		x.newConn = !s.counted
		x.latency = done.Sub(s.intended)
		x.uncorrected = done.Sub(s.start)
		x.ttfb = s.first.Sub(s.sent)
		if e.sched != nil {
			x.lag = s.start.Sub(s.intended)
		}
	}
	s.record(done)
}

// fail records a failed request and moves on; a connection that failed
// is closed. A closed loop that cannot connect pauses a millisecond, so
// a dead target is not hammered in a spin.
func (s *slot) fail(kind string) {
	l := s.l
	unserved := s.unserved()
	s.closeConn()
	s.x = sample{err: kind, unserved: unserved}
	s.record(l.now)
	if l.e.sched == nil && (kind == ErrRefused || kind == ErrAddrNotAvail) && !l.e.stopped.Load() {
		s.state = idle
		s.resumeAt = l.now.Add(time.Millisecond)
		l.backoff = append(l.backoff, s)
		return
	}
	s.next()
}

// record counts a finished request if it was measured.
func (s *slot) record(done time.Time) {
	e := s.l.e
	if s.intended.Before(e.measureStart) || (!e.end.IsZero() && done.After(e.end)) || e.stopped.Load() {
		return
	}
	s.l.sh.record(&s.x)
	if s.x.err == "" {
		s.counted = true
		if e.o.Observe != nil {
			e.o.Observe(s.x.latency.Seconds())
		}
	}
}

// closeConn closes the slot's connection (which also takes it out of the
// set).
func (s *slot) closeConn() {
	if s.fd < 0 {
		return
	}
	s.l.byFD[s.fd] = nil
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(s.fd), 0, 0)
	s.fd = -1
	s.reqs = 0 // the next request opens a connection: its first
}
