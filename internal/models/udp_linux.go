package models

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/udpwire"
	"github.com/lbbench/lbbench/internal/variant"
)

// Protocols (-proto).
const (
	ProtoTCP = "tcp" // HTTP/1.1 over TCP connections
	ProtoUDP = "udp" // request/response datagrams (udpwire)
)

// Protos lists the protocols.
var Protos = variant.List{ProtoTCP, ProtoUDP}

// udpSource serves datagrams on a worker's UDP socket: its own with
// reuseport, the one every worker shares with shared. It reads in
// batches (recvmmsg) and answers each request in place, to its sender
// (sendmmsg). A datagram that is too short or not a request is counted
// and dropped. With -accept netpoll the worker waits in Go's netpoller
// (on a shared socket every worker is woken for each batch that
// arrives); with blocking it sleeps in recvmmsg on a locked thread, where
// the kernel wakes one sleeper per datagram.
type udpSource struct {
	fd       int
	ino      uint64
	slot     *shm.Slot
	pid, id  uint32
	blocking bool
	f        *os.File        // netpoll: the socket in Go's netpoller
	rc       syscall.RawConn // netpoll
	stopping chan struct{}
	done     chan struct{}
	b        *batch
}

// aLongTimeAgo is a deadline in the past: it wakes a netpoller wait.
var aLongTimeAgo = time.Unix(1, 0)

// batchSize is how many datagrams one recvmmsg takes at most.
const batchSize = 64

// batch holds the buffers of one recvmmsg/sendmmsg round.
type batch struct {
	in, out [batchSize]unix.Mmsghdr
	iov     [batchSize]unix.Iovec
	oiov    [batchSize]unix.Iovec
	addr    [batchSize]unix.RawSockaddrInet6
	buf     [batchSize][2048]byte
}

func newUDPSource(strategy string, fd int, ino uint64, w *worker) (*udpSource, error) {
	s := &udpSource{fd: fd, ino: ino, slot: w.slot, pid: uint32(os.Getpid()), id: uint32(w.spec.ID),
		stopping: make(chan struct{}), done: make(chan struct{}), b: &batch{}}
	switch strategy {
	case AcceptBlocking:
		s.blocking = true
		tv := unix.NsecToTimeval(pollTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
	case AcceptNetpoll:
		// The shared socket's file description is shared: each worker
		// polls its own duplicate, non-blocking.
		s.f = os.NewFile(uintptr(fd), "udp")
		rc, err := s.f.SyscallConn()
		if err != nil {
			return nil, err
		}
		s.rc = rc
	default:
		return nil, fmt.Errorf("-proto udp: -accept %s has nothing to choose between for datagrams: use netpoll or blocking", strategy)
	}
	b := s.b
	for i := range batchSize {
		b.iov[i] = unix.Iovec{Base: &b.buf[i][0]}
		b.iov[i].SetLen(len(b.buf[i]))
		b.in[i].Hdr.Iov, b.in[i].Hdr.Iovlen = &b.iov[i], 1
		b.in[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.addr[i]))
	}
	return s, nil
}

func (s *udpSource) inode() uint64 { return s.ino }

// run serves until stop; serve is the TCP path's and is not used.
func (s *udpSource) run(func(fd int)) {
	defer close(s.done)
	if s.blocking {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer unix.Close(s.fd)
		for !s.stopped() {
			// A real system call: it sleeps.
			n, err := recvmmsg(s.fd, s.b, unix.MSG_WAITFORONE, unix.Syscall6)
			if err != nil {
				if err == unix.EAGAIN || err == unix.EINTR {
					continue
				}
				return
			}
			s.answer(n)
		}
		return
	}
	defer s.f.Close()
	for !s.stopped() {
		err := s.rc.Read(func(fd uintptr) bool {
			for {
				n, err := recvmmsg(int(fd), s.b, unix.MSG_DONTWAIT, unix.RawSyscall6)
				if err == unix.EAGAIN {
					return false // wait in the netpoller
				}
				if err != nil {
					return true
				}
				s.answer(n)
				if s.stopped() {
					return true
				}
			}
		})
		if err != nil && !s.stopped() {
			return
		}
	}
}

func (s *udpSource) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// stop makes run return: the netpoll wait is cut by a deadline, the
// blocking one by SO_RCVTIMEO.
func (s *udpSource) stop() {
	close(s.stopping)
	if s.f != nil {
		s.f.SetReadDeadline(aLongTimeAgo)
	}
	<-s.done
}

// answer turns the n datagrams just read into replies and sends them.
func (s *udpSource) answer(n int) {
	b := s.b
	k := 0
	for i := range n {
		d := b.buf[i][:b.in[i].Len]
		if _, ok := udpwire.ParseRequest(d); !ok {
			s.slot.Add(shm.DgramMalformed, 1)
			continue
		}
		s.slot.Add(shm.DgramIn, 1)
		if sourcePort(&b.addr[i]) == 0 {
			// udp_sendmsg refuses destination port 0 with EINVAL, and
			// sendmmsg would stop the batch there: anyone can send from
			// port 0, so such a request is counted and not answered.
			s.slot.Add(shm.DgramBadSource, 1)
			continue
		}
		reply := udpwire.AnswerInPlace(b.buf[i][:len(d):cap(b.buf[i])], s.pid, s.id)
		b.oiov[k] = unix.Iovec{Base: &reply[0]}
		b.oiov[k].SetLen(len(reply))
		b.out[k] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: b.in[i].Hdr.Name, Namelen: b.in[i].Hdr.Namelen, Iov: &b.oiov[k], Iovlen: 1}}
		k++
	}
	for sent := 0; sent < k; {
		m, err := sendmmsg(s.fd, b.out[sent:k])
		switch {
		case err == unix.EAGAIN || err == unix.ENOBUFS || err == unix.ENOMEM:
			// A full send buffer: the replies are dropped, and counted.
			s.slot.Add(shm.DgramSendFailed, uint64(k-sent))
			return
		case err != nil:
			// sendmmsg reports the first message it could not send: that
			// one reply is dropped (counted), the rest still go.
			s.slot.Add(shm.DgramSendFailed, 1)
			sent++
			continue
		}
		s.slot.Add(shm.DgramOut, uint64(m))
		sent += m
	}
}

// sourcePort is the port of a recvmmsg source address (IPv4 or IPv6:
// both keep it, big-endian, right after the family).
func sourcePort(a *unix.RawSockaddrInet6) uint16 {
	p := (*[2]byte)(unsafe.Pointer(&a.Port))
	return uint16(p[0])<<8 | uint16(p[1])
}

type syscall6 func(trap, a1, a2, a3, a4, a5, a6 uintptr) (uintptr, uintptr, syscall.Errno)

// recvmmsg reads up to batchSize datagrams. x/sys/unix has the types but
// no wrapper; x/net/ipv4's ReadBatch is one, but only through Go's
// netpoller, and the blocking strategy must sleep in the call itself.
func recvmmsg(fd int, b *batch, flags int, call syscall6) (int, error) {
	for i := range batchSize {
		b.in[i].Hdr.Namelen = uint32(unsafe.Sizeof(b.addr[i]))
		b.in[i].Len = 0
	}
	r, _, e := call(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.in[0])), batchSize, uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// sendmmsg sends what it can of msgs without blocking.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	if r == 0 {
		return 0, errors.New("sendmmsg sent nothing")
	}
	return int(r), nil
}
