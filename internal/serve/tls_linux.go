package serve

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/rawio"
	"github.com/lbbench/lbbench/internal/shm"
)

// TLS termination (-tls-cert, -tls-key). crypto/tls has no non-blocking
// state machine that an event loop could step, only a blocking
// *tls.Conn over a net.Conn, so under TLS both paths give each
// connection a goroutine on Go's netpoller: Lean serves it the way it
// serves sleeping handlers (wait_linux.go), through a tls.Conn over the
// accepted descriptor (fdConn), with the same prebuilt responses,
// counters and timeouts; NetHTTP hands net/http a connection that
// handshakes on its first read. The header timeout runs from accept and
// covers the handshake, so a client that stalls in it is cut as one
// that stalls in its request head.
//
// Both paths count each handshake in the worker's slot: full or resumed
// and its duration, or why it failed (handshakeFailure).

// notTLSResponse is what a plain-HTTP client on the TLS port is told,
// in the clear: net/http's words.
const notTLSResponse = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

// handshake runs tc's server handshake under whatever deadline is set on
// the connection, counts its result in slot, and answers a plain-HTTP
// client with a 400 in the clear. draining says whether a stop has
// begun (a deadline that passes then is the stop's, not the client's).
// It returns the slot word of the failure (0: none).
func handshake(tc *tls.Conn, slot *shm.Slot, draining *atomic.Bool) (failed int, err error) {
	start := time.Now()
	err = tc.Handshake()
	if err == nil {
		if tc.ConnectionState().DidResume {
			slot.Add(shm.TLSResumed, 1)
		} else {
			slot.Add(shm.TLSFull, 1)
		}
		slot.ObserveIn(shm.HandshakeDuration, time.Since(start))
		return 0, nil
	}
	failed = handshakeFailure(err, draining.Load())
	slot.Add(failed, 1)
	var rec tls.RecordHeaderError
	if failed == shm.TLSNotTLS && errors.As(err, &rec) && rec.Conn != nil && looksLikeHTTP(rec.RecordHeader) {
		rec.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(rec.Conn, notTLSResponse); err == nil {
			slot.Add(shm.Status4xx, 1)
		}
	}
	return failed, err
}

// handshakeFailure names, as a slot word, why a server handshake failed.
func handshakeFailure(err error, draining bool) int {
	var (
		rec tls.RecordHeaderError
		op  *net.OpError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && draining, errors.Is(err, net.ErrClosed):
		return shm.TLSDrain
	case errors.Is(err, os.ErrDeadlineExceeded):
		return shm.TLSTimeout
	case errors.As(err, &rec):
		return shm.TLSNotTLS
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return shm.TLSEOF
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls keeps the alert's type to itself; its text names
		// the alert (bad_certificate, unknown_ca, certificate_expired
		// and the like all say "certificate").
		if strings.Contains(op.Err.Error(), "certificate") {
			return shm.TLSBadCert
		}
		return shm.TLSAlert
	}
	return shm.TLSOther
}

// looksLikeHTTP says whether the first five bytes of a connection are
// the start of an HTTP request (net/http's test).
func looksLikeHTTP(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// fdConn is a net.Conn over an accepted socket for crypto/tls: reads and
// writes are rawio's (raw system calls, waits in the netpoller), the
// deadlines the *os.File's, with no duplicate of the descriptor.
type fdConn struct {
	f  *os.File
	rw *rawio.Conn
	fd int
}

func (c *fdConn) Read(p []byte) (int, error) { return c.rw.Read(p) }

func (c *fdConn) Write(p []byte) (int, error) {
	if err := c.rw.Write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *fdConn) Close() error                       { return c.f.Close() }
func (c *fdConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fdConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fdConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

func (c *fdConn) LocalAddr() net.Addr {
	sa, _ := unix.Getsockname(c.fd)
	return tcpAddr(sa)
}

func (c *fdConn) RemoteAddr() net.Addr {
	sa, _ := unix.Getpeername(c.fd)
	return tcpAddr(sa)
}

func tcpAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return &net.TCPAddr{}
}
