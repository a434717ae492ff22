package binding

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// mcastGroup is an administratively scoped group (RFC 2365); the
// datagrams never leave loopback (TTL 0 and IP_MULTICAST_IF 127.0.0.1).
const mcastGroup = "239.255.77.77"

// Unicast sends count datagrams to 127.0.0.1:P where n reuseport
// sockets are bound. The figure is copies received over all sockets
// per datagram sent: 1 (the kernel's hash picks one socket of the group).
func Unicast(n, count int) (Figure, error) {
	return deliver(n, count, false)
}

// Multicast is Unicast to a multicast group every socket joined on
// loopback: each datagram is delivered to every socket, n copies.
func Multicast(n, count int) (Figure, error) {
	return deliver(n, count, true)
}

func deliver(n, count int, mcast bool) (Figure, error) {
	f := Figure{Unit: "copies/datagram", Expect: 1}
	if mcast {
		f.Expect = float64(n)
	}
	port, err := freePort()
	if err != nil {
		return f, err
	}
	// Multicast receivers bind the wildcard: a socket bound to 127.0.0.1
	// does not match a datagram addressed to the group.
	bind := "127.0.0.1"
	if mcast {
		bind = "0.0.0.0"
	}
	var fds []int
	defer func() { closeAll(fds) }()
	for range n {
		fd, err := open(unix.SOCK_DGRAM, at(bind, port), opts{reusePort: true})
		if err != nil {
			return f, err
		}
		fds = append(fds, fd)
		if mcast {
			mreq := &unix.IPMreq{Multiaddr: at(mcastGroup, 0).Addr().As4(), Interface: [4]byte{127, 0, 0, 1}}
			if err := unix.SetsockoptIPMreq(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
				return f, fmt.Errorf("%w: join %s on loopback: %v", ErrSkipped, mcastGroup, err)
			}
		}
	}
	dst := "127.0.0.1"
	if mcast {
		dst = mcastGroup
	}
	sfd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return f, err
	}
	defer unix.Close(sfd)
	if mcast {
		// Out through loopback, looped back to local members, never routed.
		if err := unix.SetsockoptInet4Addr(sfd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, [4]byte{127, 0, 0, 1}); err != nil {
			return f, err
		}
		unix.SetsockoptInt(sfd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 1)
		unix.SetsockoptInt(sfd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 0)
	}
	per := make([]int, n)
	for sent := 0; sent < count; sent += 100 {
		for i := range min(100, count-sent) {
			// A new source port per datagram would need a new socket;
			// the payload varies so nothing coalesces.
			b := []byte{byte(i)}
			if err := unix.Sendto(sfd, b, 0, sockaddr(at(dst, port))); err != nil {
				if mcast && (errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EINVAL)) {
					return f, fmt.Errorf("%w: no multicast route over loopback: %v", ErrSkipped, err)
				}
				return f, fmt.Errorf("send to %s:%d: %w", dst, port, err)
			}
		}
		settle()
		for i, fd := range fds {
			per[i] += drain(fd, false)
		}
	}
	total := 0
	for _, c := range per {
		total += c
	}
	f.Value = float64(total) / float64(count)
	kind := map[bool]string{true: "multicast to " + mcastGroup, false: "unicast to 127.0.0.1"}[mcast]
	f.Note = fmt.Sprintf("%d datagrams, %s:%d, %d reuseport sockets: received %v (%.2f copies per datagram)", count, kind, port, n, per, f.Value)
	return f, nil
}
