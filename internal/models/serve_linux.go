package models

import (
	"errors"
	"io"
	"os"
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

// server is the lean serving path: HTTP/1.1 on the connections a worker
// gets, as accepted socket descriptors. It is the hot path, so a
// connection costs what the kernel makes it cost: the first read is
// tried at once, and a connection whose request is already there is
// answered and closed without touching the netpoller (accept4, read,
// write, close). Only a connection that has to wait (keep-alive, a
// request still on its way) is handed to the netpoller and a goroutine.
// Counters live in shared memory; responses are prebuilt.
type server struct {
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

	// head is the prebuilt start of every 200 response: status line and
	// headers up to (not including) the Connection header.
	head []byte

	// loads, if set (bpf-least), is this worker's counter in the eBPF
	// program's map: the program adds one when it assigns a connection,
	// the worker takes one off when the connection closes.
	loads *uint64

	mu       sync.Mutex
	conns    map[*conn]struct{} // connections waiting in the netpoller
	draining atomic.Bool
	// drainStart is when drain began: a connection that has sent nothing
	// gets newConnWindow from then to send its first request.
	drainStart atomic.Int64
	wg         sync.WaitGroup
}

const body = "ok\n"

// newConnWindow is how long, once a stop began, a connection that has
// not sent its first request yet may still send it. Under load that
// request is microseconds away, and closing the connection before it
// arrives would reset a client that did nothing wrong.
const newConnWindow = 250 * time.Millisecond

// Default timeouts, as nginx's client_header_timeout and keepalive_timeout.
const (
	DefaultHeaderTimeout = 60 * time.Second
	DefaultIdleTimeout   = 75 * time.Second
)

func newServer(slot *shm.Slot, id, pid int, c *Config) *server {
	h := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nX-Worker-Pid: " + strconv.Itoa(pid) + "\r\nX-Worker-Id: " + strconv.Itoa(id) + "\r\n"
	return &server{slot: slot, work: c.Work, sleep: c.Sleep, headerTimeout: c.HeaderTimeout, idleTimeout: c.IdleTimeout,
		locality: c.Locality, head: []byte(h), conns: map[*conn]struct{}{}}
}

// Connection states. A connection is new until its first request
// arrives and idle between requests; drain closes idle connections at
// once, gives new ones newConnWindow, and lets active ones finish.
const (
	stateNew int32 = iota
	stateIdle
	stateActive
	stateClosed
)

// conn is one connection. Its goroutine is the only one that reads,
// writes or closes it; others wake it through its read deadline.
type conn struct {
	s     *server
	fd    int
	file  *os.File // set once the connection waits in the netpoller
	rw    *rawio.Conn
	bp    *[]byte
	buf   []byte
	state atomic.Int32

	filled   int
	discard  int64 // request body bytes still to skip
	served   int   // responses written
	out      []byte
	req      httpwire.Request
	accepted time.Time
	// headStart is when the first byte of the head being read arrived
	// (the accept time for the first request).
	headStart time.Time
	// deadline is the read deadline set on file (zero: none yet).
	deadline time.Time
	// local is "1" when the connection's packets arrive on the CPU the
	// worker accepted it on, "0" when not, "" when unknown or not asked.
	local string
}

var (
	bufPool  = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}
	bigPool  = sync.Pool{New: func() any { b := make([]byte, httpwire.MaxHead+1024); return &b }}
	connPool = sync.Pool{New: func() any { return &conn{out: make([]byte, 0, 256)} }}
)

// serveFD serves one accepted connection; it owns fd from here on.
func (s *server) serveFD(fd int) {
	s.slot.Add(shm.Accepted, 1)
	s.slot.Add(shm.Open, 1)
	c := connPool.Get().(*conn)
	c.s, c.fd, c.file, c.rw = s, fd, nil, nil
	c.filled, c.discard, c.served, c.out = 0, 0, 0, c.out[:0]
	c.deadline = time.Time{}
	c.accepted = time.Now()
	c.headStart = c.accepted
	c.state.Store(stateNew)
	c.bp = bufPool.Get().(*[]byte)
	c.buf = *c.bp
	c.local = ""
	if s.locality {
		c.local = localityOf(fd, s.slot)
	}
	if s.sleep == 0 {
		// The first read, at once: with a new connection per request
		// the request is usually in the socket already.
		n, err := rawio.TryRead(fd, c.buf)
		switch {
		case err == unix.EAGAIN:
		case err != nil:
			c.finish(closeReasonFor(err))
			return
		default:
			c.filled = n
			c.headStart = time.Now()
			if reason, done := c.respond(); done {
				c.finish(reason)
				return
			}
		}
	}
	// It has to wait: hand it to the netpoller and a goroutine.
	c.file = os.NewFile(uintptr(fd), "conn")
	rw, err := rawio.New(c.file)
	if err != nil {
		c.finish(shm.CloseError)
		return
	}
	c.rw = rw
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go c.loop()
}

// loop serves the connection from the netpoller until it closes.
func (c *conn) loop() {
	s := c.s
	reason, done := 0, false
	if c.filled > 0 {
		reason, done = c.respond()
	}
	for !done {
		c.setReadDeadline()
		n, err := c.rw.Read(c.buf[c.filled:])
		if err != nil {
			reason = c.readFailed(err)
			break
		}
		if c.filled == 0 && c.discard == 0 {
			c.headStart = time.Now()
		}
		c.filled += n
		reason, done = c.respond()
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.finish(reason)
	s.wg.Done()
}

// readFailed says why a read ended the connection, answering a head cut
// short by the header timeout with 408.
func (c *conn) readFailed(err error) int {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return closeReasonFor(err)
	}
	switch {
	case c.s.draining.Load() && c.filled == 0:
		return shm.CloseDrain
	case c.filled == 0 && c.served > 0:
		return shm.CloseIdle
	}
	if c.filled > 0 {
		c.out = appendError(c.out[:0], 408)
		c.rw.Write(c.out)
		c.s.slot.Add(shm.Status4xx, 1)
	}
	return shm.CloseHeader
}

// setReadDeadline arms the timeout the connection's state calls for: the
// header timeout while a head is due, the keep-alive timeout while idle,
// now when a stop wants it closed. A deadline is moved only when it must
// come earlier or has fallen more than 1/16 of its timeout behind, so a
// busy keep-alive connection does not reset a timer on every request
// (the connection may then live up to 1/16 longer than the timeout).
func (c *conn) setReadDeadline() {
	// drain raises the flag before it wakes connections: one that read
	// it as down re-arms, so a stop is never answered with a long wait.
	for {
		draining := c.s.draining.Load()
		c.armDeadline(draining)
		if c.s.draining.Load() == draining {
			return
		}
	}
}

func (c *conn) armDeadline(draining bool) {
	s := c.s
	var want time.Time
	var timeout time.Duration
	switch {
	case draining && c.filled == 0 && c.served > 0:
		want = time.Unix(1, 0) // idle while stopping: close now
	case draining && c.filled == 0:
		want = time.Unix(0, s.drainStart.Load()).Add(newConnWindow)
	case c.filled == 0 && c.served > 0:
		timeout = s.idleTimeout
		want = time.Now().Add(timeout)
	default:
		timeout = s.headerTimeout
		want = c.headStart.Add(timeout)
	}
	if !c.deadline.IsZero() && !want.Before(c.deadline) && want.Sub(c.deadline) < timeout/16 {
		return
	}
	if timeout > 0 && !c.deadline.IsZero() && want.After(c.deadline) {
		want = want.Add(timeout / 16)
	}
	c.deadline = want
	c.file.SetReadDeadline(want)
}

// respond answers every complete request in the buffer. done says the
// connection is finished, for reason; the caller closes it.
func (c *conn) respond() (reason int, done bool) {
	s := c.s
	if !c.state.CompareAndSwap(stateIdle, stateActive) && !c.state.CompareAndSwap(stateNew, stateActive) {
		return shm.CloseDrain, true
	}
	start := time.Now()
	p, nreq := 0, 0
	c.out = c.out[:0]
	closing, bad := false, 0
	reason = shm.CloseServer
	for p < c.filled && !closing {
		if c.discard > 0 {
			k := min(c.discard, int64(c.filled-p))
			c.discard -= k
			p += int(k)
			continue
		}
		hn, err := httpwire.ParseRequest(c.buf[p:c.filled], &c.req)
		if err != nil {
			bad = errorStatus(err)
			c.out = appendError(c.out, bad)
			closing, reason = true, shm.CloseBadRequest
			break
		}
		if hn == 0 {
			break
		}
		p += hn
		c.discard = c.req.BodyLen
		s.handle()
		closing = c.req.Close || s.draining.Load()
		c.out = s.appendResponse(c.out, &c.req, closing, c.local)
		nreq++
	}
	copy(c.buf, c.buf[p:c.filled])
	c.filled -= p
	if c.filled == len(c.buf) && !closing {
		c.grow()
	}
	if len(c.out) > 0 {
		if err := c.write(c.out); err != nil {
			return closeReasonFor(err), true
		}
		if nreq > 0 {
			s.slot.Add(shm.Status2xx, uint64(nreq))
			d := time.Since(start)
			for range nreq {
				s.slot.Observe(d)
			}
		}
		if bad != 0 {
			s.slot.Add(shm.Status1xx+bad/100-1, 1)
		}
		c.served += nreq
	}
	if closing {
		return reason, true
	}
	if !c.state.CompareAndSwap(stateActive, stateIdle) {
		return shm.CloseDrain, true
	}
	return 0, false
}

// grow moves a head that does not fit the small buffer into a big one,
// which holds httpwire.MaxHead (larger heads get 431).
func (c *conn) grow() {
	if len(c.buf) >= httpwire.MaxHead {
		return
	}
	bp := bigPool.Get().(*[]byte)
	copy(*bp, c.buf[:c.filled])
	bufPool.Put(c.bp)
	c.bp, c.buf = bp, *bp
}

func (c *conn) write(p []byte) error {
	if c.rw != nil {
		return c.rw.Write(p)
	}
	// Not in the netpoller yet: a fresh socket's send buffer takes a
	// response at once; the rest, if ever, waits in the netpoller.
	n, err := rawio.TryWrite(c.fd, p)
	if err != nil && err != unix.EAGAIN {
		return err
	}
	if n == len(p) {
		return nil
	}
	c.file = os.NewFile(uintptr(c.fd), "conn")
	if c.rw, err = rawio.New(c.file); err != nil {
		return err
	}
	return c.rw.Write(p[n:])
}

// finish closes the connection and counts why.
func (c *conn) finish(reason int) {
	s := c.s
	c.state.Store(stateClosed)
	if c.file != nil {
		c.file.Close()
	} else {
		unix.Close(c.fd)
	}
	s.slot.Add(reason, 1)
	s.slot.Dec(shm.Open)
	if s.loads != nil {
		atomic.AddUint64(s.loads, ^uint64(0))
	}
	if c.bp != nil {
		if len(*c.bp) > 4096 {
			bigPool.Put(c.bp)
		} else {
			bufPool.Put(c.bp)
		}
	}
	c.bp, c.buf, c.file, c.rw, c.s = nil, nil, nil, nil, nil
	connPool.Put(c)
}

// closeReasonFor names why a read or write failed.
func closeReasonFor(err error) int {
	if err == io.EOF {
		return shm.CloseClient
	}
	return shm.CloseError
}

// handle does the configured per-request work.
func (s *server) handle() {
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

func (s *server) appendResponse(out []byte, req *httpwire.Request, closing bool, local string) []byte {
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

// drain stops keep-alive: idle connections close now, new ones get
// newConnWindow to send their request, active ones finish theirs. It
// returns false when grace ran out with connections still open; those
// are then closed.
func (s *server) drain(grace time.Duration) bool {
	s.drainStart.Store(time.Now().UnixNano())
	s.draining.Store(true)
	s.mu.Lock()
	for c := range s.conns {
		switch c.state.Load() {
		case stateIdle:
			c.file.SetReadDeadline(time.Unix(1, 0)) // wake it; it sees draining
		case stateNew:
			c.file.SetReadDeadline(time.Now().Add(newConnWindow))
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(grace):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.file.SetDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	<-done
	return false
}

// localityOf compares the CPU a connection's packets arrive on with the
// CPU the worker runs on as it accepts, and counts the answer.
func localityOf(fd int, slot *shm.Slot) string {
	in, err := sockets.IncomingCPU(fd)
	mine, err2 := currentCPU()
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
