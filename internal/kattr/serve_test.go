package kattr

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func startServing(t *testing.T, ports ...uint16) *Sends { return started(t, StartServing, ports) }

// writer is a thread of its own that writes what it is given.
type writer struct {
	tid  int
	jobs chan func()
}

func newWriter() *writer {
	w := &writer{jobs: make(chan func())}
	tids := make(chan int)
	go func() {
		runtime.LockOSThread()
		tids <- unix.Gettid()
		for f := range w.jobs {
			f()
		}
	}()
	w.tid = <-tids
	return w
}

func (w *writer) write(c net.Conn, p []byte) {
	done := make(chan struct{})
	w.jobs <- func() { c.Write(p); close(done) }
	<-done
}

// TestServedByTheSendingThread: on one connection, responses written by
// two threads in turn, some in two writes, are each attributed to the
// thread that sent their last byte, over IPv4, IPv6, and IPv4 to a
// dual-stack socket (whose addresses the kernel keeps v4-mapped).
func TestServedByTheSendingThread(t *testing.T) {
	for _, c := range []struct{ name, listen, dial string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"v4-mapped", "[::]:0", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bothKinds(t, func(t *testing.T, typed bool) { servedBySender(t, c.listen, c.dial, typed) })
		})
	}
}

func servedBySender(t *testing.T, listen, dial string, typed bool) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Skipf("no %s here: %v", listen, err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	server := netip.AddrPortFrom(netip.MustParseAddr(dial), port)
	tr := startServing(t, port)
	wantKind(t, tr, typed)
	a, b := newWriter(), newWriter()
	defer close(a.jobs)
	defer close(b.jobs)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	begin := time.Now()
	c, err := net.Dial("tcp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	defer sc.Close()
	tu := Tuple{Client: c.LocalAddr().(*net.TCPAddr).AddrPort(), Server: server}

	var through int64
	buf := make([]byte, 4096)
	for i := range 40 {
		w, other := a, b
		if i%3 == 1 {
			w, other = b, a
		}
		size := 100 + i*37
		if i%4 == 0 { // head by one thread, body by the other: the body's sender served it
			other.write(sc, make([]byte, 17))
			size -= 17
		}
		w.write(sc, make([]byte, size))
		want := int64(100 + i*37)
		if _, err := io.ReadFull(c, buf[:want]); err != nil {
			t.Fatal(err)
		}
		through += want
		who, ok, _ := tr.Served(tu, tr.Mono(begin), through, i == 39)
		if !ok || who.TID != w.tid || who.PID != os.Getpid() {
			t.Fatalf("response %d: served by %+v (%v), want tid %d", i, who, ok, w.tid)
		}
		if want, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", w.tid)); who.Comm != strings.TrimSpace(string(want)) {
			t.Fatalf("response %d: command name %q, want %q", i, who.Comm, want)
		}
	}
	if n := tr.pending(); n != 0 {
		t.Errorf("%d connections left in the table after the last answer", n)
	}
	// Nothing more was sent: asking past the end finds nothing, after the wait.
	t0 := time.Now()
	if _, ok, _ := tr.Served(tu, tr.Mono(begin), through+1, true); ok {
		t.Error("a byte never sent was attributed")
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("a miss waited %v", d)
	}
	if tr.Missed() != 0 {
		t.Errorf("%d sends missed", tr.Missed())
	}
}

// TestServingHookMissing: a kernel without the tracepoint is named.
func TestServingHookMissing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	t.Setenv("LBBENCH_KATTR_SERVE_HOOK", "lbbench_no_such_tracepoint")
	if _, err := StartServing(1); !errors.Is(err, ErrNoServeHook) {
		t.Fatalf("err = %v, want ErrNoServeHook", err)
	}
}
