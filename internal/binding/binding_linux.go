// Package binding measures what the kernel does with the binding claims
// users act on: who may join a SO_REUSEPORT group, what SO_REUSEADDR
// allows, which of a wildcard and a specific socket receives, and how
// many sockets of a group a datagram reaches. Each case opens its own
// sockets on a free loopback port, returns one measured figure and closes
// everything it opened.
package binding

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Figure is what a case measured: Value in Unit, what the claim says it
// should be (Expect), and a line saying what was done.
type Figure struct {
	Value, Expect float64
	Unit          string
	Note          string
}

// ErrSkipped marks a case that could not run here (not root, no
// multicast route); its message says why.
var ErrSkipped = errors.New("skipped")

// sock opens a socket of type typ on ap with the options set before
// bind, and listens if it is TCP.
type opts struct {
	reusePort, reuseAddr, v6only bool
}

func open(typ int, ap netip.AddrPort, o opts) (int, error) {
	fam := unix.AF_INET
	if ap.Addr().Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	set := func(level, opt int, on bool) {
		if err == nil && on {
			err = unix.SetsockoptInt(fd, level, opt, 1)
		}
	}
	set(unix.SOL_SOCKET, unix.SO_REUSEPORT, o.reusePort)
	set(unix.SOL_SOCKET, unix.SO_REUSEADDR, o.reuseAddr)
	if fam == unix.AF_INET6 {
		v := 0
		if o.v6only {
			v = 1
		}
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v)
		}
	}
	if err == nil {
		err = unix.Bind(fd, sockaddr(ap))
	}
	if err == nil && typ == unix.SOCK_STREAM {
		err = unix.Listen(fd, 1024)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// freePort asks the kernel for a port free for both TCP and UDP on every
// address.
func freePort() (uint16, error) {
	for range 20 {
		fd, err := open(unix.SOCK_STREAM, netip.MustParseAddrPort("0.0.0.0:0"), opts{})
		if err != nil {
			return 0, err
		}
		sa, err := unix.Getsockname(fd)
		unix.Close(fd)
		if err != nil {
			return 0, err
		}
		port := uint16(sa.(*unix.SockaddrInet4).Port)
		if u, err := open(unix.SOCK_DGRAM, netip.AddrPortFrom(netip.IPv6Unspecified(), port), opts{}); err == nil {
			unix.Close(u)
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}

// freeLoopback is 127.0.0.1 on a free port (see freePort).
func freeLoopback() (netip.AddrPort, error) {
	port, err := freePort()
	return at("127.0.0.1", port), err
}

// freeListener is a TCP socket with o bound to 127.0.0.1 on a free port.
func freeListener(o opts) (netip.AddrPort, int, error) {
	ap, err := freeLoopback()
	if err != nil {
		return ap, -1, err
	}
	fd, err := open(unix.SOCK_STREAM, ap, o)
	return ap, fd, err
}

func at(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// connectN makes n TCP connections to ap and closes them; the accept
// queues keep them for counting.
func connectN(ap netip.AddrPort, n int) error {
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, sockaddr(ap))
		// Abort, not FIN: no TIME_WAIT left behind by the client.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("connect %v: %w", ap, err)
		}
	}
	return nil
}

// drainInto drains every socket of fds, adding what each had to counts.
func drainInto(counts, fds []int, tcp bool) {
	for i, fd := range fds {
		counts[i] += drain(fd, tcp)
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// drain accepts (TCP) or reads (UDP) everything queued on fd now.
func drain(fd int, tcp bool) int {
	unix.SetNonblock(fd, true)
	n := 0
	buf := make([]byte, 64)
	for {
		var err error
		if tcp {
			var c int
			c, _, err = unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err == nil {
				unix.Close(c)
			}
		} else {
			_, _, err = unix.Recvfrom(fd, buf, 0)
		}
		if err != nil {
			return n
		}
		n++
	}
}

// settle lets loopback deliver what was sent (datagrams are queued on
// send, connections complete their handshake in softirq).
func settle() { time.Sleep(50 * time.Millisecond) }

// OtherUID binds a reuseport listener, then has a child process running
// as uid (e.g. nobody) try to join the group. The figure is 1 when the
// kernel refused the child (EADDRINUSE): a reuseport group only admits
// sockets of the same effective uid.
func OtherUID(uid int) (Figure, error) {
	f := Figure{Unit: "bind-refused", Expect: 1}
	if os.Geteuid() != 0 {
		return f, fmt.Errorf("%w: another uid cannot be run without root (euid %d)", ErrSkipped, os.Geteuid())
	}
	// The system's python3: one under root's home (pyenv) is not
	// executable by another uid.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		return f, fmt.Errorf("%w: %s (the other uid's binder) not found", ErrSkipped, py)
	}
	port, err := freePort()
	if err != nil {
		return f, err
	}
	fd, err := open(unix.SOCK_STREAM, at("127.0.0.1", port), opts{reusePort: true})
	if err != nil {
		return f, err
	}
	defer unix.Close(fd)
	// A tiny binder: it says "ok" or the errno name.
	cmd := exec.Command(py, "-c", `import socket,sys,errno
s=socket.socket()
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)
try:
    s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(8); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno,e.errno))`, strconv.Itoa(int(port)))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.Output()
	if err != nil {
		return f, fmt.Errorf("binder as uid %d: %w", uid, err)
	}
	got := strings.TrimSpace(string(out))
	if got == "EADDRINUSE" {
		f.Value = 1
	}
	f.Note = fmt.Sprintf("uid %d joining uid %d's reuseport group on 127.0.0.1:%d: %s", uid, os.Geteuid(), port, got)
	return f, nil
}

// NobodyUID is the uid of user nobody.
func NobodyUID() (int, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(u.Uid)
}
