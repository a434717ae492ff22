package models

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
)

// acceptLoop is the single model: the supervisor is the only process that
// accepts, and it passes each connection's fd to a worker with SCM_RIGHTS.
func (s *Supervisor) acceptLoop() {
	oneByte := []byte{0}
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.isStopping() {
				return
			}
			if isTemporary(err) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.log.Printf("accept: %v", err)
			return
		}
		fd, err := connFD(c)
		if err != nil {
			c.Close()
			continue
		}
		s.handOff(fd, oneByte)
		c.Close() // the worker holds its own reference now
	}
}

// handOff sends fd to the worker the dispatch policy picks. A worker whose
// control socket is full (stalled) is skipped, as its queue would be in
// any real dispatcher; when all are full it waits. The lock is held while
// sending so a worker's control fd cannot be closed (and its number
// reused) under the send.
func (s *Supervisor) handOff(fd int, data []byte) {
	rights := unix.UnixRights(fd)
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		for _, id := range s.dispatchOrder() {
			p := s.procs[id]
			if p.ctl < 0 {
				continue
			}
			err := unix.Sendmsg(p.ctl, data, rights, nil, unix.MSG_DONTWAIT)
			if err == nil {
				s.handed[id]++
				s.mu.Unlock()
				return
			}
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNREFUSED) {
				s.log.Printf("pass connection to worker %d: %v", id, err)
			}
		}
		stopping := s.stopping
		s.mu.Unlock()
		if stopping || attempt > 5000 {
			return // dropped: the connection closes with c
		}
		time.Sleep(time.Millisecond)
	}
}

// dispatchOrder returns worker ids in the order to try: round-robin from
// the next one, or fewest open connections first. s.mu is held.
func (s *Supervisor) dispatchOrder() []int {
	n := len(s.procs)
	order := s.order[:0]
	start := s.dispatchNext
	if s.cfg.Dispatch == DispatchLeast {
		best, bestOpen := start, ^uint64(0)
		for i := range n {
			id := (start + i) % n
			// Open connections plus those sent but not yet received.
			slot := s.region.Slot(s.procs[id].slot)
			open := slot.Load(shm.Open) + s.handed[id] - slot.Load(shm.Accepted)
			if open < bestOpen {
				best, bestOpen = id, open
			}
		}
		start = best
	}
	for i := range n {
		order = append(order, (start+i)%n)
	}
	s.order = order
	s.dispatchNext = (s.dispatchNext + 1) % n
	return order
}

func connFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd, nil
}
