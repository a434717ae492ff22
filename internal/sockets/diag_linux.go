package sockets

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Listener is the kernel's view of one listening TCP socket, as sock_diag
// (INET_DIAG) reports it.
type Listener struct {
	Addr  netip.AddrPort
	Inode uint64
	// Queue is the current length of the accept queue (established
	// connections not yet accepted); Backlog is its limit.
	Queue   uint32
	Backlog uint32
	// Drops, for a UDP socket, are the datagrams the kernel dropped for
	// it (a full receive buffer): SK_MEMINFO_DROPS.
	Drops uint32
}

// x/sys/unix has the netlink constants but not the inet_diag structs.
// Layouts from include/uapi/linux/inet_diag.h.
type inetDiagSockID struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	RQueue  uint32
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

const tcpListen = 10

// Listeners lists the listening TCP sockets (IPv4 and IPv6) bound to port.
// Port 0 lists all of them.
func Listeners(port uint16) ([]Listener, error) {
	return dumpPort(unix.IPPROTO_TCP, 1<<tcpListen, port)
}

// UDPSockets lists the UDP sockets (IPv4 and IPv6) bound to port, with
// the bytes waiting in their receive queue (Queue) and their drops.
func UDPSockets(port uint16) ([]Listener, error) {
	return dumpPort(unix.IPPROTO_UDP, ^uint32(0), port)
}

// dumpPort lists the sockets of proto in states (a bit per state), IPv4
// and IPv6, bound to port (0: any).
func dumpPort(proto uint8, states uint32, port uint16) ([]Listener, error) {
	var out []Listener
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ls, err := dump(fam, proto, states)
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if port == 0 || l.Addr.Port() == port {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// ConflictsUDP returns the UDP sockets that would share or shadow ap.
func ConflictsUDP(ap netip.AddrPort) ([]Listener, error) {
	ls, err := UDPSockets(ap.Port())
	if err != nil {
		return nil, err
	}
	return sameAddr(ls, ap), nil
}

// inetDiagSKMemInfo is the INET_DIAG_SKMEMINFO attribute (u32 per
// SK_MEMINFO_*), asked for with its bit in the request's extensions.
const inetDiagSKMemInfo = 7

func dump(family, proto uint8, states uint32) ([]Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)

	req := inetDiagReqV2{Family: family, Protocol: proto, States: states, Ext: 1 << (inetDiagSKMemInfo - 1)}
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + unsafe.Sizeof(req)),
		Type:  unix.SOCK_DIAG_BY_FAMILY,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
		Seq:   1,
	}
	buf := make([]byte, hdr.Len)
	*(*unix.NlMsghdr)(unsafe.Pointer(&buf[0])) = hdr
	*(*inetDiagReqV2)(unsafe.Pointer(&buf[unix.SizeofNlMsghdr])) = req
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: send: %w", err)
	}

	var out []Listener
	rb := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: recv: %w", err)
		}
		for b := rb[:n]; len(b) >= unix.SizeofNlMsghdr; {
			h := *(*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
			if int(h.Len) < unix.SizeofNlMsghdr || int(h.Len) > len(b) {
				return nil, fmt.Errorf("sock_diag: short netlink message")
			}
			data := b[unix.SizeofNlMsghdr:h.Len]
			b = b[min(len(b), int(h.Len+3)&^3):]
			switch h.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: netlink error")
			}
			if len(data) < int(unsafe.Sizeof(inetDiagMsg{})) {
				continue
			}
			d := *(*inetDiagMsg)(unsafe.Pointer(&data[0]))
			l := Listener{
				Addr:    diagAddr(d.Family, d.ID),
				Inode:   uint64(d.Inode),
				Queue:   d.RQueue,
				Backlog: d.WQueue,
			}
			// Attributes follow the message: {len u16, type u16, data}.
			for a := data[unsafe.Sizeof(inetDiagMsg{}):]; len(a) >= 4; {
				alen := int(binary.NativeEndian.Uint16(a[0:2]))
				if alen < 4 || alen > len(a) {
					break
				}
				if binary.NativeEndian.Uint16(a[2:4]) == inetDiagSKMemInfo && alen >= 4+4*(unix.SK_MEMINFO_DROPS+1) {
					l.Drops = binary.NativeEndian.Uint32(a[4+4*unix.SK_MEMINFO_DROPS:])
				}
				a = a[min(len(a), (alen+3)&^3):]
			}
			out = append(out, l)
		}
	}
}

func diagAddr(family uint8, id inetDiagSockID) netip.AddrPort {
	port := binary.BigEndian.Uint16(id.Sport[:])
	if family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(id.Src[:4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(id.Src).Unmap(), port)
}

// Conflicts returns the listening sockets that would share or shadow ap:
// the same port on the same address, or on the wildcard address.
func Conflicts(ap netip.AddrPort) ([]Listener, error) {
	ls, err := Listeners(ap.Port())
	if err != nil {
		return nil, err
	}
	return sameAddr(ls, ap), nil
}

func sameAddr(ls []Listener, ap netip.AddrPort) []Listener {
	var out []Listener
	for _, l := range ls {
		a := l.Addr.Addr()
		if a == ap.Addr() || a.IsUnspecified() || ap.Addr().IsUnspecified() {
			out = append(out, l)
		}
	}
	return out
}
