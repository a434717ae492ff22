package kattr

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func start(t *testing.T, ports ...uint16) *Tracer { return started(t, Start, ports) }

// started starts a program (Start, StartServing) on ports, skipped
// without root, closed when the test ends.
func started[T interface{ Close() error }](t testing.TB, start func(...uint16) (T, error), ports []uint16) T {
	t.Helper()
	tr, err := start(ports...)
	if errors.Is(err, ErrNoPrivilege) && os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestAcceptsAttributed: connections accepted on a watched port are
// recorded with their 4-tuple and the accepting thread; others are not.
// Both programs: the typed one this kernel takes, and the raw one.
func TestAcceptsAttributed(t *testing.T) { bothKinds(t, acceptsAttributed) }

// bothKinds runs test with the typed programs (which this kernel, 6.3+
// for the send hook, must take) and with the raw ones.
func bothKinds(t *testing.T, test func(t *testing.T, typed bool)) {
	t.Run("typed", func(t *testing.T) { test(t, true) })
	t.Run("raw", func(t *testing.T) {
		t.Setenv("LBBENCH_KATTR_RAW", "1")
		test(t, false)
	})
}

// wantKind fails the test when the program is not of the kind asked.
func wantKind(t *testing.T, p interface{ isTyped() bool }, typed bool) {
	t.Helper()
	if p.isTyped() != typed {
		t.Fatalf("typed program: %v, want %v", p.isTyped(), typed)
	}
}

func acceptsAttributed(t *testing.T, typed bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	tr := start(t, port)
	wantKind(t, tr, typed)

	const n = 200
	tids := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		tids <- unix.Gettid()
		for range n {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tid := <-tids
	start := time.Now()
	var clients []netip.AddrPort
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c.LocalAddr().(*net.TCPAddr).AddrPort())
		c.Close()
	}
	for range 5 { // not watched
		c, err := net.Dial("tcp", other.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	time.Sleep(100 * time.Millisecond) // the accept loop takes the last ones
	server := netip.MustParseAddrPort(ln.Addr().String())
	for _, c := range clients {
		a, ok := tr.Accepted(Tuple{Client: c, Server: server}, tr.Mono(start))
		if !ok {
			t.Fatalf("no acceptor for %v", c)
		}
		if a.PID != os.Getpid() || a.TID != tid || a.Comm == "" {
			t.Errorf("%v accepted by %+v, want pid %d tid %d", c, a, os.Getpid(), tid)
		}
	}
	if got := tr.Recorded(); got != n {
		t.Errorf("recorded %d accepts, want %d (missed %d)", got, n, tr.Missed())
	}
	if tr.Drain(time.Minute); tr.pending() != 0 || tr.Missed() != 0 {
		t.Errorf("%d entries left, %d missed", tr.pending(), tr.Missed())
	}
	// An accept older than the connection asked about is not its own.
	if _, ok := tr.Accepted(Tuple{Client: clients[0], Server: server}, tr.Mono(time.Now())); ok {
		t.Error("a forgotten accept was found again")
	}
}

// TestRead: a watch reads every accept, in order, each once.
func TestRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tr := start(t, uint16(ln.Addr().(*net.TCPAddr).Port))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var want []netip.AddrPort
	for range 50 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, c.LocalAddr().(*net.TCPAddr).AddrPort())
		c.Close()
	}
	var got []netip.AddrPort
	for deadline := time.Now().Add(2 * time.Second); len(got) < len(want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, ev := range tr.Read() {
			if ev.PID != os.Getpid() {
				t.Errorf("accepted by pid %d, want %d", ev.PID, os.Getpid())
			}
			got = append(got, ev.Client)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("read %v, want %v", got, want)
	}
}

func TestNoPort(t *testing.T) {
	if _, err := Start(); err == nil {
		t.Error("Start with no port succeeded")
	}
}
