package sockets

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// CheckMigration tests whether closing a reuseport listener hands its
// queued connections to another listener of the group (what
// net.ipv4.tcp_migrate_req promises) on a scratch group of two listeners
// on a free loopback port. It returns how many of the queued connections
// were lost. A sysctl that exists proves nothing: stable kernels got the
// knob without the mechanism.
func CheckMigration() (lost, total int, err error) {
	a, err := Listen("127.0.0.1:0", ListenOptions{ReusePort: true, Backlog: 256})
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if a >= 0 {
			unix.Close(a)
		}
	}()
	sa, err := unix.Getsockname(a)
	if err != nil {
		return 0, 0, err
	}
	port := sa.(*unix.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b, err := Listen(addr, ListenOptions{ReusePort: true, Backlog: 256})
	if err != nil {
		return 0, 0, err
	}
	defer unix.Close(b)
	inoA, _ := Inode(a)

	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	queuedA := 0
	for len(clients) < 128 && queuedA == 0 || len(clients) < 16 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return 0, 0, err
		}
		clients = append(clients, c)
		if ls, err := Listeners(uint16(port)); err == nil {
			for _, l := range ls {
				if l.Inode == inoA {
					queuedA = int(l.Queue)
				}
			}
		}
	}
	if queuedA == 0 {
		return 0, 0, errors.New("no connection landed on the first listener")
	}
	unix.Close(a)
	a = -1
	time.Sleep(20 * time.Millisecond)
	accepted := 0
	for {
		fd, _, err := unix.Accept4(b, unix.SOCK_CLOEXEC)
		if err != nil {
			break
		}
		unix.Close(fd)
		accepted++
	}
	return len(clients) - accepted, len(clients), nil
}
