package models

import (
	"log"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
)

// netpollSource waits in Go's netpoller (one epoll instance per process,
// edge-triggered) for the listening socket to be readable and calls
// accept4 itself: Go's own net.Listener would also set TCP_NODELAY and
// four keep-alive options and ask getsockname on every connection, a
// cost nginx does not pay and the benchmark does not need.
type netpollSource struct {
	acceptor
	f  *os.File
	rc syscall.RawConn
}

func newNetpollSource(lfd int, ino uint64, slot *shm.Slot) (*netpollSource, error) {
	f := os.NewFile(uintptr(lfd), "listener") // non-blocking: the netpoller waits on it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &netpollSource{acceptor: acceptor{lfd: lfd, ino: ino, slot: slot}, f: f, rc: rc}, nil
}

func (s *netpollSource) run(serve func(fd int)) {
	defer s.f.Close()
	for {
		var nfd int
		var aerr unix.Errno
		err := s.rc.Read(func(fd uintptr) bool {
			r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, 0, 0, acceptFlags, 0, 0)
			nfd, aerr = int(r), e
			return e != unix.EAGAIN
		})
		if err != nil {
			if !s.stopping.Load() {
				log.Printf("accept: %v; this worker stops accepting", err)
			}
			return
		}
		if aerr != 0 {
			if !s.retry(aerr) {
				return
			}
			continue
		}
		s.accepted()
		serve(nfd)
	}
}

// stop wakes the wait through the read deadline.
func (s *netpollSource) stop() {
	s.stopping.Store(true)
	s.f.SetReadDeadline(time.Unix(1, 0))
}
