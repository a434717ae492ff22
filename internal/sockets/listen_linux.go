// Package sockets creates and inspects the listening sockets the accept
// models are built on. Every option goes through golang.org/x/sys/unix so
// that what the kernel sees is exactly what the flags say (backlog,
// SO_REUSEPORT, plain TCP rather than Go's default MPTCP).
package sockets

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ListenOptions says how a listening socket is made. The zero value is a
// plain TCP socket with the kernel's somaxconn backlog.
type ListenOptions struct {
	// ReusePort sets SO_REUSEPORT before bind, so several sockets can share
	// the address and the kernel hashes connections across them.
	ReusePort bool
	// Backlog is passed to listen(2); 0 means net.core.somaxconn.
	Backlog int
	// MPTCP asks for IPPROTO_MPTCP instead of IPPROTO_TCP. Off by default:
	// reuseport BPF does not work on MPTCP sockets.
	MPTCP bool
	// Blocking leaves the socket in blocking mode (for accept on a locked
	// OS thread); otherwise it is O_NONBLOCK.
	Blocking bool
	// UDP makes a bound UDP socket instead (no listen); RcvBuf, if set,
	// is its SO_RCVBUF.
	UDP    bool
	RcvBuf int
}

// Listen opens, binds and listens on addr ("host:port") and returns the raw
// file descriptor. The caller owns it.
func Listen(addr string, o ListenOptions) (int, error) {
	ap, err := ParseAddr(addr)
	if err != nil {
		return -1, err
	}
	family := unix.AF_INET
	if ap.Addr().Is6() {
		family = unix.AF_INET6
	}
	proto, typ := unix.IPPROTO_TCP, unix.SOCK_STREAM|unix.SOCK_CLOEXEC
	if o.MPTCP {
		proto = unix.IPPROTO_MPTCP
	}
	if o.UDP {
		proto, typ = unix.IPPROTO_UDP, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC
	}
	if !o.Blocking {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ, proto)
	if err != nil {
		return -1, fmt.Errorf("listen %s: socket: %w", addr, err)
	}
	fail := func(step string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %s: %w", addr, step, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	if o.RcvBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf); err != nil {
			return fail("SO_RCVBUF", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fail("bind", ErrAddrInUse)
		}
		return fail("bind", err)
	}
	if o.UDP {
		return fd, nil
	}
	backlog := o.Backlog
	if backlog <= 0 {
		backlog = Somaxconn()
	}
	if err := unix.Listen(fd, backlog); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fail("listen", ErrAddrInUse)
		}
		return fail("listen", err)
	}
	return fd, nil
}

// ErrAddrInUse is returned (wrapped) when the address is taken.
var ErrAddrInUse = errors.New("address already in use")

// ParseAddr parses "host:port" where host is a literal IP address or
// "localhost". Names are refused: the suite's loads stay on addresses the
// user typed.
func ParseAddr(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad address %q: want HOST:PORT", addr)
	}
	if host == "localhost" || host == "" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad address %q: host must be an IP address", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad address %q: port must be 0-65535", addr)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// Somaxconn reads net.core.somaxconn, falling back to the kernel default.
func Somaxconn() int {
	n, err := ReadSysctlInt("net/core/somaxconn")
	if err != nil || n <= 0 {
		return 4096
	}
	return n
}

// ReadSysctlInt reads an integer sysctl by its /proc/sys path.
func ReadSysctlInt(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Protocol returns SO_PROTOCOL of fd (6 for TCP, 262 for MPTCP).
func Protocol(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
}

// IsNonblocking reports whether the open file description of fd has
// O_NONBLOCK. It is shared by every process holding the description, so
// one exec.Cmd.ExtraFiles (which calls Fd()) can clear it for all.
func IsNonblocking(fd int) (bool, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return false, err
	}
	return fl&unix.O_NONBLOCK != 0, nil
}

// EnsureBlocking sets O_NONBLOCK to !blocking on fd and reports whether it
// had to change it.
func EnsureBlocking(fd int, blocking bool) (changed bool, err error) {
	nb, err := IsNonblocking(fd)
	if err != nil {
		return false, err
	}
	if nb == !blocking {
		return false, nil
	}
	if err := unix.SetNonblock(fd, !blocking); err != nil {
		return false, err
	}
	nb, err = IsNonblocking(fd)
	if err != nil {
		return true, err
	}
	if nb == blocking {
		return true, fmt.Errorf("O_NONBLOCK did not change on fd %d", fd)
	}
	return true, nil
}

// Inode returns the socket inode of fd, which identifies it in sock_diag.
func Inode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// IncomingCPU returns SO_INCOMING_CPU of a connected socket.
func IncomingCPU(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_CPU)
}
