package serve

import (
	"crypto/tls"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/rawio"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// Lean is the lean serving path: HTTP/1.1 on the connections a worker
// gets, as accepted socket descriptors. It is the hot path, so a
// connection costs what the kernel makes it cost, as in nginx: a
// connection whose request is already there when it is accepted is
// answered and closed at once (accept4, read, write, close); one that has
// to wait joins the worker's event loop (evloop_linux.go: one epoll set of
// the worker's own, served by one goroutine). A handler that sleeps
// (-sleep) cannot run in a loop: then each waiting connection gets a
// goroutine of its own (wait_linux.go). Under TLS every connection does
// (tls_linux.go): crypto/tls needs a blocking net.Conn, which an event
// loop cannot step. Counters live in shared memory; responses are
// prebuilt.
type Lean struct {
	slot  *shm.Slot
	work  time.Duration
	sleep time.Duration
	// headerTimeout bounds the time from a connection's accept (or the
	// first byte of a later request) to its complete head; idleTimeout
	// bounds the wait for the next request on a keep-alive connection.
	headerTimeout, idleTimeout time.Duration
	// locality checks, for every accepted connection, whether its packets
	// arrive on the CPU the worker runs on (two system calls).
	locality bool
	// tls, if set, terminates TLS on every connection.
	tls *tls.Config

	// head is the prebuilt start of every 200 response: status line and
	// headers up to (not including) the Connection header.
	head []byte

	// loads, if set (bpf-least), is this worker's counter in the eBPF
	// program's map: the program adds one when it assigns a connection,
	// the worker takes one off when the connection closes.
	loads *uint64

	// loop serves waiting connections (with -sleep, goroutines do) and
	// accepts for the netpoll strategy.
	loop *evloop
	// eager says whether to try reading at accept, before waiting: worth
	// a system call only while requests tend to be there already
	// (connection-per-request clients on the same CPU do; a client on
	// another CPU usually has not sent yet). hits and tries are a moving
	// tally of those reads.
	hits, tries int

	// Goroutine-per-connection path (-sleep, TLS).
	mu    sync.Mutex
	conns map[*conn]struct{}
	wg    sync.WaitGroup

	draining atomic.Bool
	// drainStart is when drain began: a connection that has sent nothing
	// gets newConnWindow from then to send its first request.
	drainStart atomic.Int64
}

// newConnWindow is how long, once a stop began, a connection that has
// not sent its first request yet may still send it. Under load that
// request is microseconds away, and closing the connection before it
// arrives would reset a client that did nothing wrong.
const newConnWindow = 250 * time.Millisecond

// NewLean starts a lean serving path (its event loop runs until Drain).
func NewLean(o Options) (*Lean, error) {
	h := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nX-Worker-Pid: " + strconv.Itoa(o.PID) + "\r\nX-Worker-Id: " + strconv.Itoa(o.ID) + "\r\n"
	s := &Lean{slot: o.Slot, work: o.Work, sleep: o.Sleep, headerTimeout: o.HeaderTimeout, idleTimeout: o.IdleTimeout,
		locality: o.Locality, tls: o.TLS, head: []byte(h), conns: map[*conn]struct{}{}}
	var err error
	if s.loop, err = newEvloop(s); err != nil {
		return nil, err
	}
	return s, nil
}

// conn is one connection. Whoever waits on it (the event loop, or its
// own goroutine) is the only one that reads, writes or closes it.
//
// A connection that waits in the event loop holds no read or write
// buffer, as nginx's do: each step borrows the worker's (borrow) and
// keeps past it, in storage of its own, only what it must (giveBack): a
// partial head and response bytes the socket did not take. A connection
// with a goroutine of its own (wait_linux.go) keeps its buffers for as
// long as the goroutine runs.
type conn struct {
	s  *Lean
	fd int
	// buf holds the bytes read and not yet answered, filled of them:
	// during a step the worker's read buffer, between steps nil or the
	// connection's own storage (bp, from bufPool or bigPool).
	bp  *[]byte
	buf []byte

	filled  int
	discard int64 // request body bytes still to skip
	served  int   // responses written
	req     httpwire.Request
	// out holds responses not yet written; responses and their
	// durations are counted once written (pending*).
	// outOwned: out is the connection's own (the rest of a response the
	// socket did not take), not the worker's output buffer.
	out                 []byte
	outOwned            bool
	pending2xx, pendBad int // responses in out: 200s, and an error status (0: none)
	pendStart           time.Time
	// closing: close once out is written, for closeReason.
	closing     bool
	closeReason int
	// local is "1" when the connection's packets arrive on the CPU the
	// worker accepted it on, "0" when not, "" when unknown or not asked.
	local string

	// For the event loop: when the head being read began (unix ns), the
	// deadline of the timeout running now (unix ns; 0: none), and whether
	// the socket waits to be writable.
	headStart, deadline int64
	writing             bool

	// For the goroutine path.
	w *waiter
}

// Buffers. bufPool and bigPool hold a partial head between steps (and a
// waiting goroutine's read buffer); scratchPool the worker-wide buffers
// a step borrows off the event loop (an accept on another goroutine).
var (
	bufPool     = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}
	bigPool     = sync.Pool{New: func() any { b := make([]byte, bigSize); return &b }}
	connPool    = sync.Pool{New: func() any { return &conn{} }}
	scratchPool = sync.Pool{New: func() any { return newScratch() }}
)

// bigSize holds the largest head (larger ones get 431) and some more.
const bigSize = httpwire.MaxHead + 1024

// scratch is what a step borrows: a read buffer that holds any head a
// connection may keep (so it never grows) and an output buffer.
type scratch struct {
	rb, ob []byte
}

func newScratch() *scratch {
	return &scratch{rb: make([]byte, bigSize), ob: make([]byte, 0, 16<<10)}
}

// borrow lends c the worker's buffers for one step: the partial head it
// keeps moves to the start of the read buffer (its storage goes back to
// the pool), and responses are appended to the output buffer unless
// some of its own are still unwritten.
func (c *conn) borrow(sc *scratch) {
	if c.bp != nil {
		copy(sc.rb, c.buf[:c.filled])
		putBuf(c.bp)
		c.bp = nil
	}
	c.buf = sc.rb
	if len(c.out) == 0 {
		c.out, c.outOwned = sc.ob[:0], false
	}
}

// giveBack ends a step: what c must keep past it, a partial head and
// response bytes not yet written, moves to storage of its own, sized
// for it; everything else is let go of, so a connection that waits for
// its next request holds no buffer.
func (c *conn) giveBack() {
	if c.bp == nil {
		rb := c.buf
		c.buf = nil
		if c.filled > 0 {
			c.bp = bufPool.Get().(*[]byte)
			if c.filled > len(*c.bp) {
				putBuf(c.bp)
				c.bp = bigPool.Get().(*[]byte)
			}
			c.buf = *c.bp
			copy(c.buf, rb[:c.filled])
		}
	}
	switch {
	case len(c.out) == 0:
		c.out, c.outOwned = nil, false
	case !c.outOwned:
		c.out, c.outOwned = append([]byte(nil), c.out...), true
	}
}

// putBuf returns a buffer to the pool it came from.
func putBuf(bp *[]byte) {
	if len(*bp) > 4096 {
		bigPool.Put(bp)
	} else {
		bufPool.Put(bp)
	}
}

// ServeFD serves one accepted connection; it owns fd from here on.
func (s *Lean) ServeFD(fd int) {
	s.slot.Add(shm.Accepted, 1)
	s.slot.Add(shm.Open, 1)
	c := connPool.Get().(*conn)
	*c = conn{s: s, fd: fd}
	if s.locality {
		c.local = localityOf(fd, s.slot)
	}
	if s.ownGoroutines() {
		s.wait(c)
		return
	}
	if s.eagerRead() && !s.readAtAccept(c) {
		return
	}
	s.loop.add(c)
}

// readAtAccept reads and answers what a new connection has sent, with
// borrowed buffers: ServeFD may run on the event loop or on an accepting
// goroutine of its own, so the buffers come from a pool rather than the
// loop. It returns false when the connection is finished.
func (s *Lean) readAtAccept(c *conn) bool {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	c.borrow(sc)
	n, err := rawio.TryRead(c.fd, c.buf)
	s.tally(err != unix.EAGAIN)
	switch {
	case err == unix.EAGAIN:
	case err != nil:
		c.finish(closeReasonFor(err))
		return false
	default:
		c.filled = n
		if done := c.step(); done {
			return false
		}
	}
	c.giveBack()
	return true
}

// ownGoroutines says whether connections wait in goroutines of their own
// rather than in the event loop: when handlers sleep, and under TLS.
func (s *Lean) ownGoroutines() bool { return s.sleep > 0 || s.tls != nil }

// eagerRead says whether to read at accept. It keeps trying one read in
// 16 when it does not pay, to notice when it would again.
func (s *Lean) eagerRead() bool {
	return s.hits*2 >= s.tries || s.tries%16 == 0
}

// tally keeps a moving count of eager reads and their hits.
func (s *Lean) tally(hit bool) {
	if s.tries >= 64 {
		s.tries, s.hits = s.tries/2, s.hits/2
	}
	s.tries++
	if hit {
		s.hits++
	}
}

// step answers what the buffer holds and writes what it can. It returns
// true when the connection is finished (closed and counted).
func (c *conn) step() bool {
	c.process()
	if err := c.flush(); err != nil {
		if err == unix.EAGAIN && c.s.sleep == 0 {
			return false // the loop waits for the socket to be writable
		}
		c.finish(closeReasonFor(err))
		return true
	}
	if c.closing {
		c.finish(c.closeReason)
		return true
	}
	return false
}

// process answers every complete request in the buffer, appending the
// responses to out.
func (c *conn) process() {
	s := c.s
	if c.closing {
		return
	}
	if len(c.out) == 0 {
		c.pendStart = time.Now()
	}
	p := 0
	for p < c.filled && !c.closing {
		if c.discard > 0 {
			k := min(c.discard, int64(c.filled-p))
			c.discard -= k
			p += int(k)
			continue
		}
		hn, err := httpwire.ParseRequest(c.buf[p:c.filled], &c.req)
		if err != nil {
			c.pendBad = errorStatus(err)
			c.out = appendError(c.out, c.pendBad)
			c.closing, c.closeReason = true, shm.CloseBadRequest
			break
		}
		if hn == 0 {
			break
		}
		p += hn
		c.discard = c.req.BodyLen
		s.handle()
		if c.req.Close || s.draining.Load() {
			c.closing, c.closeReason = true, shm.CloseServer
		}
		c.out = s.appendResponse(c.out, &c.req, c.closing, c.local)
		c.pending2xx++
	}
	copy(c.buf, c.buf[p:c.filled])
	c.filled -= p
	if c.filled == len(c.buf) && !c.closing {
		c.grow()
	}
}

// flush writes out without waiting; unix.EAGAIN says some is left.
// Responses are counted once written, so the counters say what clients
// were sent.
func (c *conn) flush() error {
	for len(c.out) > 0 {
		n, err := rawio.TryWrite(c.fd, c.out)
		if err != nil {
			return err
		}
		c.out = c.out[n:]
	}
	c.out = c.out[:0:cap(c.out)]
	c.commit()
	return nil
}

// commit counts the responses just written.
func (c *conn) commit() {
	s := c.s
	if n := c.pending2xx; n > 0 {
		s.slot.Add(shm.Status2xx, uint64(n))
		d := time.Since(c.pendStart)
		for range n {
			s.slot.Observe(d)
		}
		c.served += n
	}
	if c.pendBad != 0 {
		s.slot.Add(shm.Status1xx+c.pendBad/100-1, 1)
	}
	c.pending2xx, c.pendBad = 0, 0
}

// grow moves a head that does not fit the small buffer into a big one,
// which holds httpwire.MaxHead (larger heads get 431).
func (c *conn) grow() {
	if len(c.buf) >= httpwire.MaxHead {
		return
	}
	bp := bigPool.Get().(*[]byte)
	copy(*bp, c.buf[:c.filled])
	if c.bp != nil {
		putBuf(c.bp)
	}
	c.bp, c.buf = bp, *bp
}

// finish closes the connection and counts why.
func (c *conn) finish(reason int) {
	s := c.s
	if c.w != nil {
		c.w.close(reason)
	} else {
		// A raw call: closing a TCP socket without SO_LINGER does not
		// block, and going through the scheduler's entersyscall lets
		// sysmon hand this worker's P to another thread.
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(c.fd), 0, 0)
	}
	s.slot.Add(reason, 1)
	s.slot.Dec(shm.Open)
	if s.loads != nil {
		atomic.AddUint64(s.loads, ^uint64(0))
	}
	if c.bp != nil {
		putBuf(c.bp)
	}
	*c = conn{}
	connPool.Put(c)
}

// closeReasonFor names why a read or write failed.
func closeReasonFor(err error) int {
	if err == io.EOF {
		return shm.CloseClient
	}
	return shm.CloseError
}

// timedOut answers a connection whose timeout ran out: a head cut short
// gets 408 (best effort) and the close counts as a header timeout; an
// idle keep-alive connection just closes.
func (c *conn) timedOut() int {
	switch {
	case c.s.draining.Load() && c.filled == 0:
		return shm.CloseDrain
	case c.filled == 0 && c.served > 0:
		return shm.CloseIdle
	}
	if c.filled > 0 && c.writeNow(appendError(nil, 408)) {
		c.s.slot.Add(shm.Status4xx, 1)
	}
	return shm.CloseHeader
}

// writeNow writes p if the socket takes it at once (a TLS connection
// gets 10ms), and says whether it did.
func (c *conn) writeNow(p []byte) bool {
	if c.w != nil && c.w.tc != nil {
		c.w.file.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := c.w.tc.Write(p)
		return err == nil
	}
	n, err := rawio.TryWrite(c.fd, p)
	return err == nil && n == len(p)
}

// timeout is when the connection's current timeout runs out: the header
// timeout while a head is due, the keep-alive timeout while idle; while
// stopping, an idle connection's at once and a new one's newConnWindow
// after the stop began.
func (c *conn) timeout(now time.Time, headStart time.Time) time.Time {
	s := c.s
	switch draining := s.draining.Load(); {
	case draining && c.filled == 0 && c.served > 0:
		return time.Unix(1, 0)
	case draining && c.filled == 0:
		return time.Unix(0, s.drainStart.Load()).Add(newConnWindow)
	case c.filled == 0 && c.served > 0:
		return now.Add(s.idleTimeout)
	}
	return headStart.Add(s.headerTimeout)
}

// handle does the configured per-request work.
func (s *Lean) handle() {
	if s.work > 0 {
		// A busy loop, as a CPU-heavy handler would be.
		end := time.Now().Add(s.work)
		for time.Now().Before(end) {
		}
	}
	if s.sleep > 0 {
		time.Sleep(s.sleep)
	}
}

func (s *Lean) appendResponse(out []byte, req *httpwire.Request, closing bool, local string) []byte {
	out = append(out, s.head...)
	if local != "" {
		out = append(out, "X-Conn-Local: "...)
		out = append(out, local...)
		out = append(out, "\r\n"...)
	}
	switch {
	case closing:
		out = append(out, "Connection: close\r\n"...)
	case req.HTTP10:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "\r\n"...)
	if !req.Head {
		out = append(out, body...)
	}
	return out
}

// errorStatus is the status a parse error is answered with.
func errorStatus(err error) int {
	switch err {
	case httpwire.ErrTooLarge:
		return 431
	case httpwire.ErrUnsupported:
		return 501
	}
	return 400
}

var statusText = map[int]string{
	400: "400 Bad Request",
	408: "408 Request Timeout",
	431: "431 Request Header Fields Too Large",
	501: "501 Not Implemented",
}

func appendError(out []byte, status int) []byte {
	return append(out, "HTTP/1.1 "+statusText[status]+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
}

// Drain stops keep-alive: idle connections close now, new ones get
// newConnWindow to send their request, those with a request under way
// finish it. It returns false when grace ran out with connections still
// open; those are then closed.
func (s *Lean) Drain(grace time.Duration) bool {
	s.drainStart.Store(time.Now().UnixNano())
	s.draining.Store(true)
	ok := s.loop.drain(grace)
	if s.ownGoroutines() {
		ok = s.drainWaiters(grace) && ok
	}
	return ok
}

// SetLoads gives bpf-least's counter for this worker.
func (s *Lean) SetLoads(p *uint64) { s.loads = p }

// Listen puts the listening socket a.FD() into the event loop, which
// then accepts on it and hands each connection to serve (see
// evloop.listen); shared says every worker accepts on this socket.
func (s *Lean) Listen(a Acceptor, serve func(fd int), shared bool) error {
	return s.loop.listen(a, serve, shared)
}

// Unlisten asks the event loop to take the listening socket out of its
// set and close it; the channel Unlistened returns closes when it has.
func (s *Lean) Unlisten() { s.loop.unlisten() }

// Unlistened closes once the loop has let go of the listening socket.
func (s *Lean) Unlistened() <-chan struct{} { return s.loop.unlistened }

// localityOf compares the CPU a connection's packets arrive on with the
// CPU the worker runs on as it accepts, and counts the answer.
func localityOf(fd int, slot *shm.Slot) string {
	in, err := sockets.IncomingCPU(fd)
	mine, err2 := sockets.CurrentCPU()
	if err != nil || err2 != nil || in < 0 {
		return ""
	}
	if in == mine {
		slot.Add(shm.LocalConns, 1)
		return "1"
	}
	slot.Add(shm.RemoteConns, 1)
	return "0"
}
