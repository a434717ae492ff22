package binding

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Stray joins a group of n reuseport listeners with one more socket of
// the same user (as a stale release or a test binary would) and sends
// conns connections. The figure is the share the stray received; the
// kernel's hash gives it about 1/(n+1).
func Stray(n, conns int) (Figure, error) {
	f := Figure{Unit: "stray-share", Expect: 1 / float64(n+1)}
	ap, err := freeLoopback()
	if err != nil {
		return f, err
	}
	var fds []int
	defer func() { closeAll(fds) }()
	for range n + 1 {
		fd, err := open(unix.SOCK_STREAM, ap, opts{reusePort: true})
		if err != nil {
			return f, err
		}
		fds = append(fds, fd)
	}
	// Connect in batches below each queue's backlog, counting as we go.
	counts := make([]int, n+1)
	for sent := 0; sent < conns; sent += 200 {
		if err := connectN(ap, min(200, conns-sent)); err != nil {
			return f, err
		}
		settle()
		drainInto(counts, fds, true)
	}
	total := sum(counts)
	if total == 0 {
		return f, errors.New("no connection arrived")
	}
	f.Value = float64(counts[n]) / float64(total)
	f.Note = fmt.Sprintf("%d workers + 1 stray on %v: stray took %d of %d connections (%.3f, 1/(N+1) = %.3f)", n, ap, counts[n], total, f.Value, f.Expect)
	return f, nil
}

// ReuseAddrRebind leaves a server-side TIME_WAIT connection on a port,
// closes the listener and binds it again with SO_REUSEADDR. The figure is
// 1 when the rebind worked; the note says whether it fails without.
func ReuseAddrRebind() (Figure, error) {
	f := Figure{Unit: "rebind-ok", Expect: 1}
	ap, fd, err := freeListener(opts{reuseAddr: true})
	if err != nil {
		return f, err
	}
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return f, err
	}
	if err := unix.Connect(c, sockaddr(ap)); err != nil {
		unix.Close(c)
		unix.Close(fd)
		return f, err
	}
	settle()
	a, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(c)
		unix.Close(fd)
		return f, err
	}
	// The server closes first, so the TIME_WAIT socket holds port P
	// (as a restarted server's old connections do).
	unix.Close(a)
	settle()
	unix.Close(c)
	unix.Close(fd)
	settle()

	without := "refused"
	if fd2, err := open(unix.SOCK_STREAM, ap, opts{}); err == nil {
		unix.Close(fd2)
		without = "worked"
	} else if !errors.Is(err, unix.EADDRINUSE) {
		return f, err
	}
	fd3, err := open(unix.SOCK_STREAM, ap, opts{reuseAddr: true})
	if err == nil {
		unix.Close(fd3)
		f.Value = 1
	} else if !errors.Is(err, unix.EADDRINUSE) {
		return f, err
	}
	f.Note = fmt.Sprintf("rebind %v with a TIME_WAIT connection on it: with SO_REUSEADDR %s, without it %s",
		ap, map[bool]string{true: "worked", false: "refused"}[f.Value == 1], without)
	// Abort the TIME_WAIT socket is not possible from here; it ends in 60s.
	return f, nil
}

// ReuseAddrSecondListener binds two listeners on one address, both with
// SO_REUSEADDR. The figure is 1 when the second is refused (EADDRINUSE):
// on Linux SO_REUSEADDR does not share a listening port.
func ReuseAddrSecondListener() (Figure, error) {
	f := Figure{Unit: "bind-refused", Expect: 1}
	ap, fd, err := freeListener(opts{reuseAddr: true})
	if err != nil {
		return f, err
	}
	defer unix.Close(fd)
	fd2, err := open(unix.SOCK_STREAM, ap, opts{reuseAddr: true})
	switch {
	case err == nil:
		unix.Close(fd2)
		f.Note = fmt.Sprintf("a second SO_REUSEADDR listener on %v was accepted", ap)
	case errors.Is(err, unix.EADDRINUSE):
		f.Value = 1
		f.Note = fmt.Sprintf("a second SO_REUSEADDR listener on %v: EADDRINUSE", ap)
	default:
		return f, err
	}
	return f, nil
}

// WildcardSpecific binds a socket on 0.0.0.0:P and one on 127.0.0.1:P
// (TCP: both reuseport, since a TCP listener on the wildcard otherwise
// conflicts; UDP: SO_REUSEADDR) and sends count connections or datagrams
// to 127.0.0.1:P and count to 127.0.0.2:P. The figure is the fraction
// that reached the socket the kernel should pick: the specific one for
// 127.0.0.1, the wildcard for any other address.
func WildcardSpecific(udp bool, count int) (Figure, error) {
	f := Figure{Unit: "specific-wins", Expect: 1}
	typ, o := unix.SOCK_STREAM, opts{reusePort: true}
	if udp {
		typ, o = unix.SOCK_DGRAM, opts{reuseAddr: true}
	}
	port, err := freePort()
	if err != nil {
		return f, err
	}
	wild, err := open(typ, at("0.0.0.0", port), o)
	if err != nil {
		return f, err
	}
	defer unix.Close(wild)
	spec, err := open(typ, at("127.0.0.1", port), o)
	if err != nil {
		return f, fmt.Errorf("bind 127.0.0.1:%d beside 0.0.0.0:%d: %w", port, port, err)
	}
	defer unix.Close(spec)
	send := func(dst string) (w, s int, err error) {
		if udp {
			err = sendDatagrams(at(dst, port), count)
		} else {
			err = connectN(at(dst, port), count)
		}
		settle()
		return drain(wild, !udp), drain(spec, !udp), err
	}
	w1, s1, err := send("127.0.0.1")
	if err != nil {
		return f, err
	}
	w2, s2, err := send("127.0.0.2")
	if err != nil {
		return f, err
	}
	f.Value = float64(s1+w2) / float64(2*count)
	proto := map[bool]string{true: "UDP", false: "TCP"}[udp]
	f.Note = fmt.Sprintf("%s to 127.0.0.1:%d: specific %d, wildcard %d; to 127.0.0.2: specific %d, wildcard %d", proto, port, s1, w1, s2, w2)
	return f, nil
}

func sendDatagrams(ap netip.AddrPort, n int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for range n {
		if err := unix.Sendto(fd, []byte("x"), 0, sockaddr(ap)); err != nil {
			return fmt.Errorf("send to %v: %w", ap, err)
		}
	}
	return nil
}

// DualStack binds a TCP listener on [::]:P, with or without IPV6_V6ONLY,
// then one on 0.0.0.0:P. The IPv4 bind should work only with
// IPV6_V6ONLY, since a dual-stack [::] socket holds the
// IPv4 port too.
func DualStack(v6only bool) (Figure, error) {
	// Both ways the claimed outcome is figure 1: refused beside a
	// dual-stack socket, bound beside a V6ONLY one.
	f := Figure{Unit: "bind-refused", Expect: 1}
	if v6only {
		f.Unit = "ipv4-bind-ok"
	}
	port, err := freePort()
	if err != nil {
		return f, err
	}
	six, err := open(unix.SOCK_STREAM, at("::", port), opts{v6only: v6only})
	if err != nil {
		return f, fmt.Errorf("%w: no IPv6 here: %v", ErrSkipped, err)
	}
	defer unix.Close(six)
	four, err := open(unix.SOCK_STREAM, at("0.0.0.0", port), opts{})
	switch {
	case err == nil:
		if v6only {
			f.Value = 1
		}
		// Which one a connection to 127.0.0.1 reaches: the IPv4 socket.
		connectN(at("127.0.0.1", port), 1)
		settle()
		got4 := drain(four, true)
		unix.Close(four)
		f.Note = fmt.Sprintf("0.0.0.0:%d beside [::]:%d (V6ONLY=%v): bound; a connection to 127.0.0.1 reached the IPv4 socket %d of 1", port, port, v6only, got4)
	case errors.Is(err, unix.EADDRINUSE):
		if !v6only {
			f.Value = 1
		}
		connectN(at("127.0.0.1", port), 1)
		settle()
		got6 := drain(six, true)
		f.Note = fmt.Sprintf("0.0.0.0:%d beside [::]:%d (V6ONLY=%v): EADDRINUSE; the [::] socket took %d of 1 IPv4 connections", port, port, v6only, got6)
	default:
		return f, err
	}
	return f, nil
}
