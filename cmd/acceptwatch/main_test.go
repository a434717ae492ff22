package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the watch needs root (CI runs as root)")
	}
}

// startWatch starts acceptwatch and waits until its program is in place
// (it prints its first second).
func startWatch(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "watch.json")
	cmd := exec.Command(proctest.Bin(t, "acceptwatch"), append([]string{"-json", out}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	// It says "watching" once its program is attached.
	rd := bufio.NewReader(stderr)
	line, err := rd.ReadString('\n')
	if !strings.HasPrefix(line, "watching port") {
		t.Fatalf("acceptwatch said %q (%v)", line, err)
	}
	go io.Copy(io.Discard, rd)
	return cmd, &stdout, out
}

func readSummary(t *testing.T, cmd *exec.Cmd, stdout *bytes.Buffer, path string) *Summary {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("acceptwatch: %v\n%s", err, stdout.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func loadgen(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-q"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out)
	}
}

// TestWatchMatchesTargetCounters: every accept the watch saw, by
// process, equals what the target's workers counted themselves, and the
// sockets it lists are theirs.
func TestWatchMatchesTargetCounters(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "3")
	port := tg.Addr[strings.LastIndex(tg.Addr, ":")+1:]
	cmd, stdout, path := startWatch(t, "-port", port, "-d", "3s", "-workers", "3")
	loadgen(t, "-c", "8", "-n", "4000", "-conn", "close", "http://"+tg.Addr+"/")
	s := readSummary(t, cmd, stdout, path)
	accepted := proctest.ByLabel(tg.Metrics(t)["lbbench_target_accepted_connections_total"], "pid")
	if s.Accepts != 4000 || s.Missed != 0 || len(s.PerPID) != 3 {
		t.Fatalf("saw %d accepts (%d missed) by %d processes, want 4000 by 3", s.Accepts, s.Missed, len(s.PerPID))
	}
	for pid, c := range s.PerPID {
		if float64(c.Accepts) != accepted[pid] {
			t.Errorf("pid %s: the watch saw %d accepts, the worker counted %v", pid, c.Accepts, accepted[pid])
		}
	}
	if len(s.Sockets) != 3 {
		t.Fatalf("sockets %+v, want the 3 workers'", s.Sockets)
	}
	for _, k := range s.Sockets {
		if len(k.Owners) != 1 || s.PerPID[strconv.Itoa(k.Owners[0])] == nil || k.Backlog == 0 {
			t.Errorf("socket %+v is not held by one of the workers", k)
		}
	}
	if s.Fairness.Workers != 3 || s.Fairness.Total != 4000 {
		t.Errorf("fairness %+v", s.Fairness)
	}
	if !strings.Contains(stdout.String(), "Fairness by process over 3") {
		t.Errorf("summary:\n%s", stdout.String())
	}
}

// TestWatchThreads: by thread, the watch's counts equal HAProxy's own
// per-thread accept counters.
func TestWatchThreads(t *testing.T) {
	needRoot(t)
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	hp, err := peers.StartHAProxy(peers.HAProxyOptions{Addr: addr, Threads: 3, Shards: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Stop()
	stats, err := hp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	before, err := stats.Activity()
	if err != nil {
		t.Fatal(err)
	}
	cmd, stdout, path := startWatch(t, "-port", addr[strings.LastIndex(addr, ":")+1:], "-d", "3s", "-by", "thread", "-workers", "3")
	loadgen(t, "-c", "8", "-n", "3000", "-conn", "close", "http://"+addr+"/")
	s := readSummary(t, cmd, stdout, path)
	after, err := stats.Activity()
	if err != nil {
		t.Fatal(err)
	}
	var mine, theirs []int64
	for _, c := range s.PerTID {
		mine = append(mine, c.Accepts)
	}
	for th := range after["accepted"] {
		if n := after["accepted"][th] - before["accepted"][th]; n > 0 {
			theirs = append(theirs, n)
		}
	}
	slices.Sort(mine)
	slices.Sort(theirs)
	if !slices.Equal(mine, theirs) || s.Missed != 0 {
		t.Errorf("accepts per thread: watch %v (missed %d), HAProxy %v", mine, s.Missed, theirs)
	}
}

// TestWatchStopsOnInterrupt: with no -d it watches until Ctrl-C, then
// prints its summary and exits 0.
func TestWatchStopsOnInterrupt(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2")
	port := tg.Addr[strings.LastIndex(tg.Addr, ":")+1:]
	cmd, stdout, path := startWatch(t, "-port", port, "-q")
	loadgen(t, "-c", "4", "-n", "500", "-conn", "close", "http://"+tg.Addr+"/")
	cmd.Process.Signal(os.Interrupt)
	s := readSummary(t, cmd, stdout, path)
	if s.Accepts != 500 {
		t.Errorf("saw %d accepts, want 500:\n%s", s.Accepts, stdout.String())
	}
}

// TestBadInput: one line, a non-zero status, no program left behind.
func TestBadInput(t *testing.T) {
	free := strconv.Itoa(proctest.FreePort(t))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{}, 2, "-port: give the port to watch"},
		{[]string{"-port", "70000"}, 2, "-port: give the port to watch"},
		{[]string{"-port", "80", "-by", "cpu"}, 2, `-by "cpu": want process, thread, serving-process or serving-thread`},
		{[]string{"-port", "80", "-d", "-1s"}, 2, "-d must not be negative"},
		{[]string{"8080"}, 2, `unexpected argument "8080"`},
		{[]string{"-port", "80", "-metrics-addr", "nowhere"}, 2, "-metrics-addr"},
		{[]string{"-port", free, "-d", "1s"}, 1, "nothing listens on port " + free},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "acceptwatch"), c.args...), c.code, c.want)
		})
	}
}
