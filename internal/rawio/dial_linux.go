package rawio

import (
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Dialed is a connection made by Dial: the *os.File holds the socket (the
// netpoller waits on it; deadlines and Close go through it) and Conn
// reads and writes it.
type Dialed struct {
	*Conn
	File *os.File
}

// Dial connects to remote from local (if valid) with non-blocking socket
// calls and hands the socket to the netpoller as an *os.File. It does
// what net.Dialer.Dial does for an IP address, without the address
// resolution machinery and the getsockname/getpeername calls, which at
// tens of thousands of new connections a second are a fifth of a load
// generator's CPU. IP_BIND_ADDRESS_NO_PORT lets the kernel choose the
// local port at connect time, per destination.
func Dial(local netip.Addr, remote netip.AddrPort, timeout time.Duration) (*Dialed, error) {
	family := unix.AF_INET
	if remote.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if local.IsValid() {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("bind", err)
		}
	}
	if err := unix.Connect(fd, sockaddr(remote)); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: registered with the netpoller
	if timeout > 0 {
		f.SetWriteDeadline(time.Now().Add(timeout))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	// Writable means connected or failed. SO_ERROR reads 0 while the
	// handshake is in flight, so ask poll(2) first: the netpoller drops a
	// readiness edge that came before the wait was prepared, and on
	// loopback the handshake is often done by now.
	var soErr int
	err = rc.Write(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, _ := unix.Poll(pfd, 0); n == 0 {
			return false
		}
		soErr, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		return true
	})
	if err == nil && soErr != 0 {
		err = os.NewSyscallError("connect", unix.Errno(soErr))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	f.SetWriteDeadline(time.Time{})
	return &Dialed{Conn: newConn(rc), File: f}, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
