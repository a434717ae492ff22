package models

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// exclusiveSource waits on an epoll instance of its own with the
// listening socket added EPOLLEXCLUSIVE, as nginx does since 1.11.3 with
// accept_mutex off, and accepts one connection per wake-up. Exclusive
// waiters are woken LIFO-like.
type exclusiveSource struct {
	acceptor
	ep int
}

func newExclusiveSource(lfd int, ino uint64, slot *shm.Slot) (*exclusiveSource, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(lfd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("epoll_ctl EPOLLEXCLUSIVE: %w", err)
	}
	return &exclusiveSource{acceptor: acceptor{lfd: lfd, ino: ino, slot: slot}, ep: ep}, nil
}

func (s *exclusiveSource) run(serve func(fd int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.Close(s.lfd)
	defer unix.Close(s.ep)
	events := make([]unix.EpollEvent, 1)
	for !s.stopping.Load() {
		n, err := unix.EpollWait(s.ep, events, int(pollTimeout.Milliseconds()))
		if n <= 0 || err != nil {
			continue
		}
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(s.lfd), 0, 0, sockets.AcceptFlags, 0, 0)
		if e == unix.EAGAIN {
			continue // another worker was woken for the same connection
		}
		if e != 0 {
			if !s.retry(e) {
				return
			}
			continue
		}
		s.Accepted()
		serve(int(r))
	}
}

func (s *exclusiveSource) stop() { s.stopping.Store(true) }
