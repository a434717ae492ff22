package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// runLoadgen runs bin/loadgen and returns its JSON document and stdout.
func runLoadgen(t *testing.T, args ...string) (*rundoc.Doc, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "run.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-json", out}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("loadgen %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	return readDoc(t, out), stdout.String()
}

func readDoc(t *testing.T, path string) *rundoc.Doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d rundoc.Doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &d
}

// TestCountsMatchTargetMetrics: loadgen's per-pid counts equal, request
// for request, what the target itself counted.
func TestCountsMatchTargetMetrics(t *testing.T) {
	for _, model := range []string{"reuseport", "shared", "single"} {
		t.Run(model, func(t *testing.T) {
			tg := proctest.StartTarget(t, "-model", model, "-workers", "3")
			url := "http://" + tg.Addr + "/"
			for _, args := range [][]string{
				{"-c", "8", "-n", "3000", "-conn", "close", "-src", "127.0.0.2-127.0.0.5"},
				{"-c", "6", "-n", "4000", "-conn", "keepalive", "-reqs-per-conn", "7"},
				{"-rate", "2000", "-n", "1500", "-c", "20", "-conn", "close"},
			} {
				before := tg.Metrics(t)
				d, _ := runLoadgen(t, append(args, "-workers", "3", url)...)
				after := tg.Metrics(t)
				if d.Errors != 0 {
					t.Fatalf("%v: %d errors %v", args, d.Errors, d.ErrorsByKind)
				}
				n, _ := strconv.ParseInt(args[3], 10, 64)
				if d.Requests != n {
					t.Errorf("%v: %d requests, want %d", args, d.Requests, n)
				}
				reqs := delta(before, after, "lbbench_target_requests_total")
				conns := delta(before, after, "lbbench_target_accepted_connections_total")
				for pid, pc := range d.PerPID {
					if float64(pc.Requests) != reqs[pid] || float64(pc.Connections) != conns[pid] {
						t.Errorf("%v pid %s: loadgen %d req %d conn; target %v req %v conn",
							args, pid, pc.Requests, pc.Connections, reqs[pid], conns[pid])
					}
				}
				for pid, n := range reqs {
					if n > 0 && d.PerPID[pid] == nil {
						t.Errorf("%v: target counted %v requests on pid %s that loadgen never saw", args, n, pid)
					}
				}
			}
		})
	}
}

func delta(before, after map[string]*proctest.Family, name string) map[string]float64 {
	b := proctest.ByLabel(before[name], "pid")
	a := proctest.ByLabel(after[name], "pid")
	for k, v := range b {
		a[k] -= v
	}
	return a
}

// TestCountsMatchNginxLog: the ground truth is nginx's own access log,
// which records the serving worker's pid and connection number.
func TestCountsMatchNginxLog(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: addr, Workers: 2, ReusePort: true, AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Stop()
	d, _ := runLoadgen(t, "-c", "10", "-n", "2000", "-conn", "close", "http://"+addr+"/")
	d2, _ := runLoadgen(t, "-c", "4", "-n", "2000", "-reqs-per-conn", "50", "http://"+addr+"/")
	awaitLog(t, d.Requests+d2.Requests, func() int64 { r, _, _ := ng.LogCounts(); return sum(r) })
	reqs, conns, err := ng.LogCounts()
	if err != nil {
		t.Fatal(err)
	}
	for pid := range reqs {
		var r, c int64
		for _, doc := range []*rundoc.Doc{d, d2} {
			if pc := doc.PerPID[pid]; pc != nil {
				r += pc.Requests
				c += pc.Connections
			}
		}
		if r != int64(reqs[pid]) || c != int64(conns[pid]) {
			t.Errorf("pid %s: loadgen %d requests %d connections; nginx log %d requests %d connections", pid, r, c, reqs[pid], conns[pid])
		}
	}
	if len(reqs) != 2 {
		t.Errorf("nginx log names %d worker pids, want 2", len(reqs))
	}
}

// TestStallShowsInTail: a server that stops for a second during an
// open-loop run must show it in p99 and max, as wrk2 does.
func TestStallShowsInTail(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "1")
	kids := proctest.Children(tg.Cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("children %v", kids)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		syscall.Kill(kids[0], syscall.SIGSTOP)
		time.Sleep(time.Second)
		syscall.Kill(kids[0], syscall.SIGCONT)
	}()
	d, _ := runLoadgen(t, "-rate", "500", "-d", "4s", "-c", "20", "-timeout", "5s", "http://"+tg.Addr+"/")
	if d.Latency.Max < 0.9 || d.Latency.P99 < 0.5 {
		t.Errorf("a 1 s stall gave p99 %v max %v (from intended times)", d.Latency.P99, d.Latency.Max)
	}
	// 20 connections cannot hide 500 requests: without the correction the
	// queued ones would look fast.
	if d.Uncorrected.P90 >= d.Latency.P90 && d.Latency.P90 > 0.1 {
		t.Errorf("uncorrected p90 %v not below corrected %v", d.Uncorrected.P90, d.Latency.P90)
	}
	if d.Requests < 1900 {
		t.Errorf("only %d requests at 500/s for 4 s", d.Requests)
	}
}

// TestDeadTarget ends with a summary that says nothing answered.
func TestDeadTarget(t *testing.T) {
	port := proctest.FreePort(t)
	out := filepath.Join(t.TempDir(), "dead.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-c", "4", "-d", "1s", "-json", out, "http://127.0.0.1:"+strconv.Itoa(port)+"/")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	start := time.Now()
	err := cmd.Run()
	if err == nil {
		t.Fatal("exit status 0 against a dead target")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if !strings.Contains(stdout.String(), "no successful response") || !strings.Contains(stdout.String(), "refused") {
		t.Errorf("summary does not say so:\n%s", stdout.String())
	}
	if d := readDoc(t, out); d.ErrorsByKind["refused"] == 0 || d.Requests != 0 {
		t.Errorf("refused %d requests %d", d.ErrorsByKind["refused"], d.Requests)
	}
}

// TestInterruptKeepsResults: Ctrl-C prints the summary and writes files.
func TestInterruptKeepsResults(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	dir := t.TempDir()
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-c", "4", "-d", "60s", "-json", dir+"/r.json",
		"-bench", dir+"/r.txt", "-series", dir+"/r.csv", "http://"+tg.Addr+"/")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("still running 5 s after SIGINT")
	}
	d := readDoc(t, dir+"/r.json")
	if !d.Interrupted || d.Requests == 0 || d.DurationSeconds > 3 {
		t.Errorf("interrupted=%v requests=%d duration=%v", d.Interrupted, d.Requests, d.DurationSeconds)
	}
	if !strings.Contains(stdout.String(), "interrupted") {
		t.Errorf("summary does not say interrupted:\n%s", stdout.String())
	}
	for _, f := range []string{"r.txt", "r.csv"} {
		if st, err := os.Stat(dir + "/" + f); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("files left: %v (temp files?)", ents)
	}
}

// TestBadInput: a usage error, one line, exit status 2.
func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "0", "http://127.0.0.1:1/"}, "-c 0"},
		{[]string{"-d", "-1s", "http://127.0.0.1:1/"}, "must not be negative"},
		{[]string{"-n", "0", "http://127.0.0.1:1/"}, "-d and -n must be positive"},
		{[]string{"-rate", "100", "http://127.0.0.1:1/"}, "-rate needs -d"},
		{[]string{"-rate", "-5", "-d", "1s", "http://127.0.0.1:1/"}, "-rate -5"},
		{[]string{"ftp://x/"}, "bad URL"},
		{[]string{"http://example.com/"}, "host must be an IP address"},
		{[]string{"-src", "127.0.0.9-127.0.0.2", "http://127.0.0.1:1/"}, "range must go up"},
		{[]string{"-src", "nope", "http://127.0.0.1:1/"}, "is not an IP address"},
		{[]string{"-conn", "sometimes", "http://127.0.0.1:1/"}, `invalid value "sometimes" for flag -conn: want keepalive or close`},
		{[]string{"-bogus", "http://127.0.0.1:1/"}, "flag provided but not defined"},
		{[]string{}, "want exactly one URL"},
		{[]string{"-netns", "nowhere", "-d", "1s", "http://127.0.0.1:1/"}, "-netns nowhere: no such network namespace"},
	} {
		cmd := exec.Command(proctest.Bin(t, "loadgen"), c.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want 2", c.args, err)
		}
		s := strings.TrimSpace(stderr.String())
		if !strings.Contains(s, c.want) || strings.Contains(s, "\n") {
			t.Errorf("%v: stderr %q, want one line with %q", c.args, s, c.want)
		}
	}
}

// TestSelfCheckFlagsShortfall: asking for far more than one connection can
// carry is reported as the generator falling short, not hidden.
func TestSelfCheckFlagsShortfall(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-sleep", "5ms")
	bench := filepath.Join(t.TempDir(), "b.txt")
	d, out := runLoadgen(t, "-rate", "2000", "-d", "1s", "-c", "1", "-bench", bench, "http://"+tg.Addr+"/")
	if !d.SelfCheck.Bottleneck || !strings.Contains(out, "WARNING: loadgen may be the bottleneck") {
		t.Errorf("self-check did not fire: %+v\n%s", d.SelfCheck, out)
	}
	// The sample carries the mark as data, so a report can flag it.
	if b, _ := os.ReadFile(bench); !strings.Contains(string(b), " jain 1 loadgen-bound") {
		t.Errorf("-bench output lacks the loadgen-bound mark:\n%s", b)
	}
	// A run that loadgen did not limit carries none.
	d, _ = runLoadgen(t, "-rate", "50", "-d", "1s", "-c", "4", "-bench", bench, "http://"+tg.Addr+"/")
	if b, _ := os.ReadFile(bench); d.SelfCheck.Bottleneck || strings.Contains(string(b), " jain 1 loadgen-bound") {
		t.Errorf("50 req/s on 4 connections: self-check %+v, -bench:\n%s", d.SelfCheck, b)
	}
}
