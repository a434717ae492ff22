package models

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// blockingSource calls accept4 on a blocking socket from one locked OS
// thread: the kernel queues such sleepers FIFO, so connections go round
// the workers in turn. accept4 honours SO_RCVTIMEO, so the thread wakes
// every pollTimeout to see whether it should stop.
type blockingSource struct {
	acceptor
}

func newBlockingSource(lfd int, ino uint64, slot *shm.Slot) (*blockingSource, error) {
	tv := unix.NsecToTimeval(pollTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(lfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	return &blockingSource{acceptor: acceptor{lfd: lfd, ino: ino, slot: slot}}, nil
}

func (s *blockingSource) run(serve func(fd int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.Close(s.lfd)
	for !s.stopping.Load() {
		// A real system call (not Raw): it sleeps, and the scheduler
		// must hand this worker's P to its other goroutines meanwhile.
		r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(s.lfd), 0, 0, sockets.AcceptFlags, 0, 0)
		if !s.took(r, e, serve) {
			return
		}
	}
}
