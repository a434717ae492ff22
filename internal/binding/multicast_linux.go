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
	return deliver(n, count, unicast)
}

// Multicast is Unicast to a multicast group every socket joined on
// loopback: each datagram is delivered to every socket, n copies.
func Multicast(n, count int) (Figure, error) {
	return deliver(n, count, multicast)
}

// Broadcast is Unicast to loopback's broadcast address
// (127.255.255.255, in the local routing table): the kernel delivers a
// broadcast to every matching socket, as a multicast, so n copies.
func Broadcast(n, count int) (Figure, error) {
	return deliver(n, count, broadcast)
}

// delivery is how a datagram is addressed.
type delivery int

const (
	unicast delivery = iota
	multicast
	broadcast
)

// dst is the address the sender uses.
func (d delivery) dst() string {
	return [...]string{"127.0.0.1", mcastGroup, "127.255.255.255"}[d]
}

func (d delivery) String() string {
	return [...]string{"unicast", "multicast", "broadcast"}[d]
}

func deliver(n, count int, how delivery) (Figure, error) {
	mcast := how == multicast
	f := Figure{Unit: "copies/datagram", Expect: 1}
	if how != unicast {
		f.Expect = float64(n)
	}
	port, err := freePort()
	if err != nil {
		return f, err
	}
	// Multicast and broadcast receivers bind the wildcard: a socket
	// bound to 127.0.0.1 does not match a datagram addressed to the
	// group or to the broadcast address.
	bind := "127.0.0.1"
	if how != unicast {
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
	dst := how.dst()
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
	if how == broadcast {
		if err := unix.SetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return f, err
		}
	}
	per := make([]int, n)
	for sent := 0; sent < count; sent += 100 {
		for i := range min(100, count-sent) {
			// A new source port per datagram would need a new socket;
			// the payload varies so nothing coalesces.
			b := []byte{byte(i)}
			if err := unix.Sendto(sfd, b, 0, sockaddr(at(dst, port))); err != nil {
				if how != unicast && (errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EINVAL)) {
					return f, fmt.Errorf("%w: no %s route over loopback: %v", ErrSkipped, how, err)
				}
				return f, fmt.Errorf("send to %s:%d: %w", dst, port, err)
			}
		}
		settle()
		drainInto(per, fds, false)
	}
	total := sum(per)
	f.Value = float64(total) / float64(count)
	f.Note = fmt.Sprintf("%d datagrams, %s to %s:%d, %d reuseport sockets: received %v (%.2f copies per datagram)", count, how, dst, port, n, per, f.Value)
	return f, nil
}
