// Package poll is the one place the programs build epoll sets: the
// target's event loop, loadgen's TCP and UDP loops and the EPOLLEXCLUSIVE
// accept strategy all wait on a Set, as gnet keeps one poller for its
// server and its client.
//
// A Set can carry an eventfd (NewWaker) through which other goroutines
// wake the goroutine that waits on it. The waits come in three kinds,
// because who waits decides what the wait may cost:
//
//   - Wait and WaitMillis are raw system calls: a loop that is its
//     process's only busy goroutine blocks in epoll_pwait itself, a short
//     while at a time, because going through the scheduler's
//     entersyscall makes sysmon take the P back on every wait.
//   - Block goes through the scheduler, for a goroutine on a locked OS
//     thread that may wait long (the P is handed on meanwhile).
//   - File gives the set to Go's netpoller, which then waits on it: the
//     scheduler's own epoll_pwait on top of the set's, but other
//     goroutines are never kept from the P.
//
// epoll_ctl never blocks, so Add, Mod and Del are raw calls.
package poll

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Set is an epoll instance and the buffer its waits fill. It is not
// safe for concurrent waits; Add, Mod, Del and Wake may come from any
// goroutine.
type Set struct {
	fd   int
	wake int // the eventfd in the set, -1 without one
	f    *os.File
	// pwait2 says epoll_pwait2 may work here (it is cleared on ENOSYS).
	pwait2 bool
	// Events are what the last wait returned, the first n of them.
	Events []unix.EpollEvent
}

// New makes a set whose waits return at most size events.
func New(size int) (*Set, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	return &Set{fd: fd, wake: -1, pwait2: true, Events: make([]unix.EpollEvent, size)}, nil
}

// NewWaker makes a set with an eventfd in it, so Wake ends a wait.
func NewWaker(size int) (*Set, error) {
	s, err := New(size)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := s.Add(wake, unix.EPOLLIN); err != nil {
		unix.Close(wake)
		s.Close()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	s.wake = wake
	return s, nil
}

// Add puts fd into the set, waiting for events (EPOLLIN, EPOLLET, ...).
func (s *Set) Add(fd int, events uint32) error { return s.ctl(unix.EPOLL_CTL_ADD, fd, events) }

// Mod changes the events fd waits for.
func (s *Set) Mod(fd int, events uint32) error { return s.ctl(unix.EPOLL_CTL_MOD, fd, events) }

// Del takes fd out of the set (closing fd does so too, once no other
// descriptor refers to its file).
func (s *Set) Del(fd int) error { return s.ctl(unix.EPOLL_CTL_DEL, fd, 0) }

func (s *Set) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(s.fd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// Wake ends the set's current or next wait (a set made by NewWaker).
func (s *Set) Wake() {
	one := [8]byte{1}
	unix.Write(s.wake, one[:])
}

// Woken says whether fd, from an event, is the set's eventfd, and then
// reads its count so the next wait blocks again.
func (s *Set) Woken(fd int32) bool {
	if s.wake < 0 || int(fd) != s.wake {
		return false
	}
	var b [8]byte
	unix.Read(s.wake, b[:])
	return true
}

// Wait waits at most d for events with epoll_pwait2's nanoseconds where
// the kernel has it (5.11+), else with epoll_pwait's milliseconds
// rounded up; a raw call (see the package doc).
func (s *Set) Wait(d time.Duration) (int, error) {
	if s.pwait2 {
		ts := unix.NsecToTimespec(d.Nanoseconds())
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT2, uintptr(s.fd), uintptr(unsafe.Pointer(&s.Events[0])),
			uintptr(len(s.Events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if e != unix.ENOSYS {
			if e != 0 {
				return 0, e
			}
			return int(n), nil
		}
		s.pwait2 = false
	}
	return s.WaitMillis(int((d + time.Millisecond - 1) / time.Millisecond))
}

// WaitMillis waits at most ms milliseconds (0: takes what is ready) in
// a raw epoll_pwait.
func (s *Set) WaitMillis(ms int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(s.fd), uintptr(unsafe.Pointer(&s.Events[0])),
		uintptr(len(s.Events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Block waits at most ms milliseconds through the scheduler, which hands
// the P on while the thread blocks.
func (s *Set) Block(ms int) (int, error) { return unix.EpollWait(s.fd, s.Events, ms) }

// File makes the set non-blocking and hands it to Go's netpoller, which
// wakes a RawConn Read on the file when the set has events; the caller
// then takes them with WaitMillis(0). The set is closed through the file
// from then on (Close does it).
func (s *Set) File(name string) *os.File {
	unix.SetNonblock(s.fd, true)
	s.f = os.NewFile(uintptr(s.fd), name)
	return s.f
}

// Close closes the set and its eventfd. Nothing may Wake it after.
func (s *Set) Close() {
	if s.f != nil {
		s.f.Close()
	} else {
		unix.Close(s.fd)
	}
	if s.wake >= 0 {
		unix.Close(s.wake)
	}
}
