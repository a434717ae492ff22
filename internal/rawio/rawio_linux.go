// Package rawio reads and writes connections with raw read(2)/write(2)
// calls inside the netpoller's RawConn callbacks, and reads a socket's
// local address with one raw getsockname(2).
package rawio

import (
	"io"
	"net/netip"
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

// New wraps a connection the netpoller waits on: a net.Conn or a
// pollable *os.File.
func New(c syscall.Conn) (*Conn, error) {
	rc, err := c.SyscallConn()
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

// TryRead reads fd once without waiting for it: n bytes, or 0 and
// unix.EAGAIN when nothing has arrived yet, or 0 and io.EOF when the
// peer closed. fd must be non-blocking and owned by the caller (no other
// goroutine may close it meanwhile).
func TryRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	switch {
	case e != 0:
		return 0, e
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// TryWrite writes p to fd once without waiting; it may write less.
func TryWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// LocalAddr returns the local address and port of the IP socket fd with
// one raw getsockname(2). unix.Getsockname also asks the socket's
// protocol (a getsockopt, to tell L2TP from TCP) and allocates the
// result: two system calls through the scheduler where loadgen, which
// asks once per connection to match the kernel's events by 4-tuple,
// needs one.
func LocalAddr(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port(sa.Port)), nil
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port(sa.Port)), nil
	}
	return netip.AddrPort{}, unix.EAFNOSUPPORT
}

// port reads a sockaddr's port, which is in network order.
func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
