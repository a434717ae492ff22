package serve

import (
	"crypto/tls"
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/lbbench/lbbench/internal/rawio"
	"github.com/lbbench/lbbench/internal/shm"
)

// waiter is the other way for a connection to wait: a goroutine of its
// own and Go's netpoller, for handlers that block (-sleep) and for TLS
// (tls_linux.go), which an event loop cannot run. Timeouts are read
// deadlines.
type waiter struct {
	file *os.File
	rw   *rawio.Conn
	// tc, under TLS, is the tls.Conn over the socket that every read
	// and write goes through.
	tc       *tls.Conn
	state    atomic.Int32
	deadline time.Time
	head     time.Time // when the head being read began
}

// Connection states on this path. A connection is new until its first
// request arrives and idle between requests; drain closes idle
// connections at once, gives new ones newConnWindow, and lets active
// ones finish.
const (
	stateNew int32 = iota
	stateIdle
	stateActive
)

// wait gives c a goroutine that serves it until it closes.
func (s *Lean) wait(c *conn) {
	f := os.NewFile(uintptr(c.fd), "conn")
	rw, err := rawio.New(f)
	if err != nil {
		f.Close()
		c.finish(shm.CloseError)
		return
	}
	// The goroutine keeps its buffers while it runs: it blocks in read.
	c.bp = bufPool.Get().(*[]byte)
	c.buf = *c.bp
	c.out = make([]byte, 0, 256)
	c.w = &waiter{file: f, rw: rw, head: time.Now()}
	if s.tls != nil {
		c.w.tc = tls.Server(&fdConn{f: f, rw: rw, fd: c.fd}, s.tls)
	}
	if c.served > 0 || c.filled > 0 {
		c.w.state.Store(stateIdle)
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go c.waitLoop()
}

// close closes the connection. Under TLS an orderly close (ours, or an
// idle one's) first tells the client with a close_notify alert, as
// nginx and net/http do; after a client's close or an error there is
// no one to tell.
func (w *waiter) close(reason int) {
	switch {
	case w.tc != nil && reason != shm.CloseClient && reason != shm.CloseError:
		w.tc.Close() // closes the file too
	default:
		w.file.Close()
	}
}

// read reads the connection (through TLS, if on).
func (w *waiter) read(p []byte) (int, error) {
	if w.tc != nil {
		return w.tc.Read(p)
	}
	return w.rw.Read(p)
}

// write writes all of p (through TLS, if on).
func (w *waiter) write(p []byte) error {
	if w.tc != nil {
		_, err := w.tc.Write(p)
		return err
	}
	return w.rw.Write(p)
}

// handshake runs the TLS handshake under the header timeout (both
// directions: a client that will not read the server's flight stalls
// it too). done says the connection is finished, for reason.
func (c *conn) handshake() (reason int, done bool) {
	w := c.w
	c.setReadDeadline()
	w.file.SetWriteDeadline(w.deadline)
	failed, err := handshake(w.tc, c.s.slot, &c.s.draining)
	if err == nil {
		w.file.SetWriteDeadline(time.Time{})
		return 0, false
	}
	switch failed {
	case shm.TLSTimeout:
		return shm.CloseHeader, true
	case shm.TLSDrain:
		return shm.CloseDrain, true
	case shm.TLSEOF, shm.TLSBadCert, shm.TLSAlert:
		return shm.CloseClient, true // the client ended it
	}
	return shm.CloseBadRequest, true
}

func (c *conn) waitLoop() {
	s, w := c.s, c.w
	reason, done := 0, false
	if w.tc != nil {
		reason, done = c.handshake()
	}
	if c.filled > 0 && !done {
		reason, done = c.answer()
	}
	for !done {
		c.setReadDeadline()
		n, err := w.read(c.buf[c.filled:])
		if err != nil {
			reason = closeReasonFor(err)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				reason = c.timedOut()
			}
			break
		}
		if c.filled == 0 && c.discard == 0 {
			w.head = time.Now()
		}
		c.filled += n
		reason, done = c.answer()
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.finish(reason)
	s.wg.Done()
}

// answer processes the buffer and writes the responses, waiting for the
// socket if it must. done says the connection is finished, for reason.
func (c *conn) answer() (reason int, done bool) {
	w := c.w
	if !w.state.CompareAndSwap(stateIdle, stateActive) && !w.state.CompareAndSwap(stateNew, stateActive) {
		return shm.CloseDrain, true
	}
	c.process()
	if len(c.out) > 0 {
		if err := w.write(c.out); err != nil {
			return closeReasonFor(err), true
		}
		c.out = c.out[:0]
		c.commit()
	}
	if c.closing {
		return c.closeReason, true
	}
	if !w.state.CompareAndSwap(stateActive, stateIdle) {
		return shm.CloseDrain, true
	}
	return 0, false
}

// setReadDeadline arms the timeout the connection's state calls for. A
// deadline is moved only when it must come earlier or has fallen more
// than 1/16 of its timeout behind, so a busy keep-alive connection does
// not reset a timer on every request (it may then live up to 1/16
// longer than the timeout). drain raises its flag before it wakes
// connections: one that read it as down re-arms.
func (c *conn) setReadDeadline() {
	w := c.w
	for {
		draining := c.s.draining.Load()
		want := c.timeout(time.Now(), w.head)
		timeout := c.s.headerTimeout
		if c.filled == 0 && c.served > 0 {
			timeout = c.s.idleTimeout
		}
		if draining || w.deadline.IsZero() || want.Before(w.deadline) || want.Sub(w.deadline) >= timeout/16 {
			if !draining && !w.deadline.IsZero() && want.After(w.deadline) {
				want = want.Add(timeout / 16)
			}
			w.deadline = want
			w.file.SetReadDeadline(want)
		}
		if c.s.draining.Load() == draining {
			return
		}
	}
}

// drainWaiters is drain for connections with goroutines of their own.
func (s *Lean) drainWaiters(grace time.Duration) bool {
	s.mu.Lock()
	for c := range s.conns {
		switch c.w.state.Load() {
		case stateIdle:
			c.w.file.SetReadDeadline(time.Unix(1, 0)) // wake it; it sees draining
		case stateNew:
			c.w.file.SetReadDeadline(time.Now().Add(newConnWindow))
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
		c.w.file.SetDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	<-done
	return false
}
