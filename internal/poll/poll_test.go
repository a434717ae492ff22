package poll

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitFor waits until events come or d has passed, as the loops do: a
// wait that a signal interrupts (Go preempts with SIGURG) is waited again
// for the rest.
func waitFor(s *Set, d time.Duration) (int, error) {
	end := time.Now().Add(d)
	for {
		n, err := s.Wait(max(time.Until(end), 0))
		if err != unix.EINTR || time.Now().After(end) {
			return n, err
		}
	}
}

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// TestWakeEndsWait: a Wake from another goroutine ends a long wait with
// the eventfd's event, which Woken recognises and drains, so the next
// wait times out again.
func TestWakeEndsWait(t *testing.T) {
	s, err := NewWaker(8)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go func() { time.Sleep(20 * time.Millisecond); s.Wake() }()
	start := time.Now()
	n, err := waitFor(s, 5*time.Second)
	if err != nil || n != 1 || time.Since(start) > 2*time.Second {
		t.Fatalf("wait: %d events, %v after %v", n, err, time.Since(start))
	}
	if !s.Woken(s.Events[0].Fd) {
		t.Fatalf("event on fd %d is not the eventfd", s.Events[0].Fd)
	}
	if n, err := s.WaitMillis(0); n != 0 || err != nil {
		t.Errorf("after Woken: %d events, %v", n, err)
	}
}

// TestAddModDel: a readable pipe shows up with the events asked for,
// Mod changes them, Del takes the pipe out; Woken is false for it.
func TestAddModDel(t *testing.T) {
	s, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w := pipe(t)
	if err := s.Add(r, unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(r, unix.EPOLLIN); err != unix.EEXIST {
		t.Errorf("second Add: %v, want EEXIST", err)
	}
	if n, _ := s.WaitMillis(0); n != 0 {
		t.Fatalf("empty pipe: %d events", n)
	}
	unix.Write(w, []byte("x"))
	n, err := s.Block(1000)
	for err == unix.EINTR {
		n, err = s.Block(1000)
	}
	if err != nil || n != 1 || int(s.Events[0].Fd) != r || s.Events[0].Events&unix.EPOLLIN == 0 || s.Woken(s.Events[0].Fd) {
		t.Fatalf("readable pipe: %d events %+v, %v", n, s.Events[:n], err)
	}
	if err := s.Mod(r, unix.EPOLLOUT); err != nil {
		t.Fatal(err)
	}
	if n, _ := waitFor(s, 10*time.Millisecond); n != 0 {
		t.Errorf("read end asked for EPOLLOUT: %d events %+v", n, s.Events[:n])
	}
	if err := s.Mod(r, unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	if err := s.Del(r); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.WaitMillis(0); n != 0 {
		t.Errorf("after Del: %d events", n)
	}
	if err := s.Del(r); err != unix.ENOENT {
		t.Errorf("second Del: %v, want ENOENT", err)
	}
}

// TestWaitTimesOut: with nothing ready Wait returns no events after
// about the time asked, not at once.
func TestWaitTimesOut(t *testing.T) {
	s, err := New(1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	n, err := waitFor(s, 30*time.Millisecond)
	if el := time.Since(start); n != 0 || err != nil || el < 25*time.Millisecond {
		t.Errorf("wait: %d events, %v after %v", n, err, el)
	}
}

// TestFile: handed to the netpoller, the set wakes a RawConn Read when a
// pipe in it is readable, and the events are taken with WaitMillis(0).
func TestFile(t *testing.T) {
	s, err := NewWaker(4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := s.File("test")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r, w := pipe(t)
	if err := s.Add(r, unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); unix.Write(w, []byte("x")) }()
	f.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := 0
	rc.Read(func(uintptr) bool {
		n, _ := s.WaitMillis(0)
		for _, ev := range s.Events[:n] {
			if int(ev.Fd) == r {
				got++
			}
		}
		return got > 0
	})
	if got != 1 {
		t.Errorf("pipe events through the netpoller: %d", got)
	}
}
