package models

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/poll"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// exclusiveSource waits on an epoll instance of its own with the
// listening socket added EPOLLEXCLUSIVE, as nginx does since 1.11.3 with
// accept_mutex off, and accepts one connection per wake-up. Exclusive
// waiters are woken LIFO-like.
type exclusiveSource struct {
	acceptor
	set *poll.Set
}

func newExclusiveSource(lfd int, ino uint64, slot *shm.Slot) (*exclusiveSource, error) {
	set, err := poll.New(1)
	if err != nil {
		return nil, err
	}
	if err := set.Add(lfd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
		set.Close()
		return nil, fmt.Errorf("epoll_ctl EPOLLEXCLUSIVE: %w", err)
	}
	return &exclusiveSource{acceptor: acceptor{lfd: lfd, ino: ino, slot: slot}, set: set}, nil
}

func (s *exclusiveSource) run(serve func(fd int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.Close(s.lfd)
	defer s.set.Close()
	for !s.stopping.Load() {
		// Through the scheduler: the thread is locked and blocks for up
		// to pollTimeout.
		n, err := s.set.Block(int(pollTimeout.Milliseconds()))
		if n <= 0 || err != nil {
			continue
		}
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(s.lfd), 0, 0, sockets.AcceptFlags, 0, 0)
		if e == unix.EAGAIN {
			continue // another worker was woken for the same connection
		}
		if !s.took(r, e, serve) {
			return
		}
	}
}
