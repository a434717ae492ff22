package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
	"golang.org/x/sys/unix"
)

// SIGHUP (a closed terminal) ends the watch like SIGINT: -json written,
// exit 0.
func TestWatchSIGHUPWritesJSON(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2")
	_, port, _ := net.SplitHostPort(tg.Addr)
	cmd, stdout, out := startWatch(t, "-q", "-port", port)
	loadgen(t, "-c", "2", "-n", "200", "-conn", "close", "http://"+tg.Addr+"/")
	time.Sleep(1200 * time.Millisecond) // one tick reads the ring
	cmd.Process.Signal(syscall.SIGHUP)
	s := readSummary(t, cmd, stdout, out)
	if s.Accepts != 200 {
		t.Fatalf("after SIGHUP the summary has %d accepts, want 200", s.Accepts)
	}
}

// Nothing accepted: no "Jain 1.0000" (perfectly fair over nothing), a
// plain sentence; and -workers 5000 with one accept no longer panics in
// the chi-square test.
func TestWatchNoAcceptsAndManyWorkers(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "1")
	_, port, _ := net.SplitHostPort(tg.Addr)
	cmd, stdout, out := startWatch(t, "-q", "-port", port, "-d", "1s")
	s := readSummary(t, cmd, stdout, out)
	if s.Accepts != 0 || strings.Contains(stdout.String(), "Jain") || !strings.Contains(stdout.String(), "no connections were accepted") {
		t.Fatalf("zero accepts (%d) printed:\n%s", s.Accepts, stdout.String())
	}

	cmd, stdout, out = startWatch(t, "-q", "-port", port, "-d", "1500ms", "-workers", "5000")
	loadgen(t, "-c", "1", "-n", "1", "-conn", "close", "http://"+tg.Addr+"/")
	s = readSummary(t, cmd, stdout, out)
	if s.Accepts != 1 || s.Fairness.Workers != 5000 || s.Fairness.PValue < 0 || s.Fairness.PValue > 1 {
		t.Fatalf("one accept over 5000 workers: %d accepts, %+v", s.Accepts, s.Fairness)
	}
}

// A listening socket whose server exited leaves the table.
func TestWatchForgetsClosedSockets(t *testing.T) {
	needRoot(t)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	lc.SetMultipathTCP(false)
	port := proctest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	a, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cmd, stdout, out := startWatch(t, "-q", "-port", strconv.Itoa(port))
	time.Sleep(1200 * time.Millisecond) // the first tick lists both
	a.Close()
	time.Sleep(1200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	s := readSummary(t, cmd, stdout, out)
	if len(s.Sockets) != 1 {
		t.Fatalf("after one of two sockets closed the table has %d: %+v", len(s.Sockets), s.Sockets)
	}
}

// -json /dev/full: one line, exit 1, /dev/full stays a device.
func TestWatchJSONToDevFull(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "1")
	_, port, _ := net.SplitHostPort(tg.Addr)
	cmd := exec.Command(proctest.Bin(t, "acceptwatch"), "-q", "-port", port, "-d", "1s", "-json", "/dev/full")
	code, stderr := proctest.RunStatus(t, cmd)
	lines := strings.Split(stderr, "\n")
	// The "watching port" progress line, then the error.
	if code != 1 || len(lines) != 2 || lines[1] != "acceptwatch: write /dev/full: no space left on device" {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	if st, err := os.Stat("/dev/full"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/full is no longer a device: %v %v", st.Mode(), err)
	}
}
