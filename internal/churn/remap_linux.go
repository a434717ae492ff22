// Package churn measures what changing a SO_REUSEPORT group does to the
// mapping of 4-tuples to sockets.
package churn

import (
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/sockets"
)

// Remap returns the fraction of tuples client 4-tuples that land on a
// different socket after a group of n reuseport sockets on loopback
// grows to n+1. Each tuple is a fixed source port, traced to the socket
// that got it: for TCP ("tcp") a connection, accepted and reset
// (SO_LINGER 0, so no TIME_WAIT keeps it from being used again); for UDP
// ("udp") a datagram, read from the socket it reached.
func Remap(proto string, n, tuples, firstPort int) (float64, error) {
	if n < 1 || tuples < 1 {
		return 0, errors.New("remap: want n >= 1 and tuples >= 1")
	}
	udp := proto == "udp"
	opts := sockets.ListenOptions{ReusePort: true, Backlog: 64, UDP: udp}
	trace := trace
	if udp {
		trace = traceUDP
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	first, err := sockets.Listen("127.0.0.1:0", opts)
	if err != nil {
		return 0, err
	}
	fds = append(fds, first)
	sa, _ := unix.Getsockname(first)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for len(fds) < n {
		fd, err := sockets.Listen(addr, opts)
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
	}
	port := sa.(*unix.SockaddrInet4).Port
	// Source ports in use elsewhere are skipped; the same ports are used
	// again after the group grows.
	var sports, before []int
	for sp := firstPort; len(sports) < tuples; sp++ {
		if sp > 65535 {
			return 0, errors.New("remap: ran out of source ports")
		}
		idx, err := trace(fds, port, sp)
		if errors.Is(err, unix.EADDRINUSE) {
			continue
		}
		if err != nil {
			return 0, err
		}
		sports, before = append(sports, sp), append(before, idx)
	}
	fd, err := sockets.Listen(addr, opts)
	if err != nil {
		return 0, err
	}
	fds = append(fds, fd)
	moved, traced := 0, 0
	for i, sp := range sports {
		after, err := trace(fds, port, sp)
		if errors.Is(err, unix.EADDRINUSE) {
			continue // taken meanwhile by someone else
		}
		if err != nil {
			return 0, err
		}
		traced++
		if after != before[i] {
			moved++
		}
	}
	if traced == 0 {
		return 0, errors.New("remap: no source port could be used twice")
	}
	return float64(moved) / float64(traced), nil
}

var linger0 = &unix.Linger{Onoff: 1, Linger: 0}

// trace connects from 127.0.0.1:sport to the group and returns the index
// of the listener that queued the connection.
func trace(listeners []int, port, sport int) (int, error) {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(c)
	unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptLinger(c, unix.SOL_SOCKET, unix.SO_LINGER, linger0)
	if err := unix.Bind(c, &unix.SockaddrInet4{Port: sport, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, fmt.Errorf("bind source port %d: %w", sport, err)
	}
	if err := unix.Connect(c, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, fmt.Errorf("connect from port %d: %w", sport, err)
	}
	for range 1000 {
		for i, l := range listeners {
			nfd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err == nil {
				unix.SetsockoptLinger(nfd, unix.SOL_SOCKET, unix.SO_LINGER, linger0)
				unix.Close(nfd)
				return i, nil
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
	return -1, fmt.Errorf("connection from port %d was not queued on any listener", sport)
}

// traceUDP sends a datagram from 127.0.0.1:sport to the group and returns
// the index of the socket it reached.
func traceUDP(socks []int, port, sport int) (int, error) {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(c)
	if err := unix.Bind(c, &unix.SockaddrInet4{Port: sport, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, fmt.Errorf("bind source port %d: %w", sport, err)
	}
	if err := unix.Sendto(c, []byte("remap"), 0, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, fmt.Errorf("send from port %d: %w", sport, err)
	}
	buf := make([]byte, 16)
	for range 1000 {
		for i, s := range socks {
			if _, _, err := unix.Recvfrom(s, buf, unix.MSG_DONTWAIT); err == nil {
				return i, nil
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
	return -1, fmt.Errorf("the datagram from port %d reached no socket", sport)
}

// ExpectedModulo is the fraction that moves when a hash picks h mod n and
// n grows by one: 1 - 1/(n+1).
func ExpectedModulo(n int) float64 { return 1 - 1/float64(n+1) }

// ExpectedScale is the fraction that moves with the kernel's
// reciprocal_scale (index = h*n >> 32) when n grows by one: the share of
// [0,1) where floor(x*n) and floor(x*(n+1)) differ.
func ExpectedScale(n int) float64 {
	same := 0.0
	for k := range n {
		// [k/n, (k+1)/n) overlaps [k/(n+1), (k+1)/(n+1)) where both pick k.
		lo := math.Max(float64(k)/float64(n), float64(k)/float64(n+1))
		hi := math.Min(float64(k+1)/float64(n), float64(k+1)/float64(n+1))
		same += math.Max(0, hi-lo)
	}
	return 1 - same
}
