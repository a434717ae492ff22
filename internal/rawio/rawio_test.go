package rawio

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTryReadWrite(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	buf := make([]byte, 16)
	if _, err := TryRead(fds[0], buf); err != unix.EAGAIN {
		t.Errorf("nothing sent yet: %v, want EAGAIN", err)
	}
	if n, err := TryWrite(fds[1], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write %d %v", n, err)
	}
	if n, err := TryRead(fds[0], buf); n != 5 || err != nil || string(buf[:5]) != "hello" {
		t.Fatalf("read %d %v %q", n, err, buf[:n])
	}
	unix.Close(fds[0])
	unix.Close(fds[1])
	fds2, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	unix.Close(fds2[1])
	if _, err := TryRead(fds2[0], buf); err != io.EOF {
		t.Errorf("peer closed: %v, want EOF", err)
	}
	unix.Close(fds2[0])
}

// TestConn: Conn reads and writes through the netpoller, waiting when
// nothing is there yet.
func TestConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 4)
		io.ReadFull(c, b)
		time.Sleep(50 * time.Millisecond) // the client waits in the netpoller
		c.Write(b)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rw, err := New(c.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if err := rw.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := rw.Read(b); n != 4 || err != nil || string(b) != "ping" {
		t.Fatalf("read %d %v %q", n, err, b)
	}
	if n, err := rw.Read(b); n != 0 || err != io.EOF {
		t.Errorf("after the server closed: %d %v", n, err)
	}
}

// TestLocalAddr: the address and port getsockname gives equal what the
// net package says of the same socket, for IPv4 and IPv6 (where the
// host has it); a socket of another family is refused.
func TestLocalAddr(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		host := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
		ln, err := net.Listen(network, host)
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, _ := c.(*net.TCPConn).SyscallConn()
		var got netip.AddrPort
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = LocalAddr(int(fd)) })
		if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); gerr != nil || got != want {
			t.Errorf("%s: LocalAddr %v, %v; the net package says %v", network, got, gerr, want)
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if ap, err := LocalAddr(fds[0]); err == nil {
		t.Errorf("a unix socket: %v, want an error", ap)
	}
}
