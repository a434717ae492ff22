// Package rawio reads and writes connections with raw read(2)/write(2)
// calls inside the netpoller's RawConn callbacks.
package rawio

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn reads and writes a connection through the netpoller's RawConn but
// with raw read(2)/write(2) calls. A non-blocking socket call returns at
// once, so it need not go through the scheduler's entersyscall, whose
// wake-ups of the sysmon thread cost a GOMAXPROCS=1 worker about a tenth
// of its keep-alive throughput; waiting for readiness is still the
// netpoller's job.
type Conn struct {
	rc      syscall.RawConn
	p       []byte
	n       int
	errno   syscall.Errno
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

func New(c net.Conn) (*Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return newConn(rc), nil
}

func newConn(rc syscall.RawConn) *Conn {
	r := &Conn{rc: rc}
	r.readFn = func(fd uintptr) bool {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		r.n, r.errno = int(n), e
		return e != unix.EAGAIN
	}
	r.writeFn = func(fd uintptr) bool {
		for len(r.p) > 0 {
			n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
			if e == unix.EAGAIN {
				return false
			}
			if e != 0 {
				r.errno = e
				return true
			}
			r.p = r.p[n:]
		}
		return true
	}
	return r
}

func (r *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, io.ErrShortBuffer
	}
	r.p, r.errno = p, 0
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	if r.n == 0 {
		return 0, io.EOF
	}
	return r.n, nil
}

func (r *Conn) Write(p []byte) error {
	r.p, r.errno = p, 0
	if err := r.rc.Write(r.writeFn); err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	return nil
}
