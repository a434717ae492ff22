package main

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/sockets"
)

// variants are every model and accept strategy the target offers.
var variants = []struct {
	name      string
	args      []string
	listeners func(workers int) int
}{
	{"single/rr", []string{"-model", "single", "-dispatch", "rr"}, one},
	{"single/least", []string{"-model", "single", "-dispatch", "least"}, one},
	{"shared/netpoll", []string{"-model", "shared", "-accept", "netpoll"}, one},
	{"shared/blocking", []string{"-model", "shared", "-accept", "blocking"}, one},
	{"shared/exclusive", []string{"-model", "shared", "-accept", "exclusive"}, one},
	{"reuseport/netpoll", []string{"-model", "reuseport"}, perWorker},
	{"reuseport/blocking", []string{"-model", "reuseport", "-accept", "blocking"}, perWorker},
	{"reuseport/exclusive", []string{"-model", "reuseport", "-accept", "exclusive"}, perWorker},
	// Go's net/http serving, on Go's own accept path and on handed-over
	// descriptors.
	{"reuseport/nethttp", []string{"-model", "reuseport", "-http", "nethttp"}, perWorker},
	{"shared/nethttp", []string{"-model", "shared", "-http", "nethttp"}, one},
	{"shared/exclusive/nethttp", []string{"-model", "shared", "-accept", "exclusive", "-http", "nethttp"}, one},
	{"single/nethttp", []string{"-model", "single", "-http", "nethttp"}, one},
}

func one(int) int         { return 1 }
func perWorker(n int) int { return n }

// TestAttributionMatchesMetrics drives each model with new connections and
// keep-alive connections and checks that what the client saw per worker
// pid equals, request for request, what the target's metrics say.
func TestAttributionMatchesMetrics(t *testing.T) {
	const workers = 3
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			tg := proctest.StartTarget(t, append(v.args, "-workers", strconv.Itoa(workers))...)
			ap, _ := sockets.ParseAddr(tg.Addr)
			ls, err := sockets.Listeners(ap.Port())
			if err != nil {
				t.Fatal(err)
			}
			if want := v.listeners(workers); len(ls) != want {
				t.Fatalf("%d listening sockets on port %d, want %d", len(ls), ap.Port(), want)
			}

			reqs := map[string]int{}  // pid -> requests seen
			conns := map[string]int{} // pid -> connections seen
			ids := map[string]string{}
			var mu sync.Mutex
			note := func(pid, id string, newConn bool) {
				mu.Lock()
				defer mu.Unlock()
				reqs[pid]++
				if newConn {
					conns[pid]++
				}
				if prev, ok := ids[pid]; ok && prev != id {
					t.Errorf("pid %s answered as worker %s and %s", pid, prev, id)
				}
				ids[pid] = id
			}
			var wg sync.WaitGroup
			for g := range 4 { // connection per request, 4 clients at once
				wg.Go(func() {
					for range 30 {
						pid, id, err := proctest.Get(tg.Addr)
						if err != nil {
							t.Errorf("client %d: %v", g, err)
							return
						}
						note(pid, id, true)
					}
				})
			}
			for range 6 { // keep-alive: 25 requests on each of 6 connections
				wg.Go(func() {
					kc, err := proctest.Dial(tg.Addr)
					if err != nil {
						t.Error(err)
						return
					}
					defer kc.Close()
					first := ""
					for i := range 25 {
						pid, id, err := kc.Do()
						if err != nil {
							t.Error(err)
							return
						}
						if i == 0 {
							first = pid
						} else if pid != first {
							t.Errorf("keep-alive connection moved from pid %s to %s", first, pid)
						}
						note(pid, id, i == 0)
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}

			children := map[string]bool{}
			for _, pid := range proctest.Children(tg.Cmd.Process.Pid) {
				children[strconv.Itoa(pid)] = true
			}
			for pid := range reqs {
				if !children[pid] {
					t.Errorf("X-Worker-Pid %s is not a child of the supervisor (children %v)", pid, children)
				}
			}
			// Counters are published before the response is written, but
			// the open-connection gauge may lag the client's close.
			m := tg.Metrics(t)
			gotReqs := proctest.ByLabel(m["lbbench_target_requests_total"], "pid")
			gotConns := proctest.ByLabel(m["lbbench_target_accepted_connections_total"], "pid")
			for pid, n := range gotReqs {
				if n != float64(reqs[pid]) {
					t.Errorf("pid %s: metrics say %v requests, client saw %d", pid, n, reqs[pid])
				}
			}
			for pid, n := range reqs {
				if gotReqs[pid] != float64(n) {
					t.Errorf("pid %s: client saw %d requests, metrics say %v", pid, n, gotReqs[pid])
				}
				if gotConns[pid] != float64(conns[pid]) {
					t.Errorf("pid %s: client opened %d connections, metrics say %v accepted", pid, conns[pid], gotConns[pid])
				}
			}
			if len(gotReqs) != workers {
				t.Errorf("metrics list %d pids, want %d", len(gotReqs), workers)
			}
			if err := tg.Stop(t, 10*time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
			for pid := range children {
				p, _ := strconv.Atoi(pid)
				if proctest.Alive(p) {
					t.Errorf("worker %d still alive after the supervisor exited", p)
				}
			}
		})
	}
}

// TestInProc: in-process workers are one process whose accept loops each
// serve a share, counted by worker id; the target's metrics agree with
// what the client saw, and a stop leaves nothing running.
func TestInProc(t *testing.T) {
	for _, args := range [][]string{
		{"-model", "reuseport"},
		{"-model", "shared"},
		{"-model", "shared", "-accept", "exclusive"},
		{"-model", "reuseport", "-http", "nethttp"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			tg := proctest.StartTarget(t, append(args, "-inproc", "-workers", "3")...)
			if kids := proctest.Children(tg.Cmd.Process.Pid); len(kids) != 0 {
				t.Fatalf("in-process workers, yet child processes %v", kids)
			}
			seen := map[string]int{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range 8 { // 8 clients at once, so that every loop is woken
				wg.Go(func() {
					for range 100 {
						pid, id, err := proctest.Get(tg.Addr)
						if err != nil {
							t.Error(err)
							return
						}
						if pid != strconv.Itoa(tg.Cmd.Process.Pid) {
							t.Errorf("X-Worker-Pid %s, want the one process %d", pid, tg.Cmd.Process.Pid)
						}
						mu.Lock()
						seen[id]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(seen) != 3 {
				t.Errorf("worker ids that answered 800 connections: %v, want 3", seen)
			}
			got := proctest.ByLabel(tg.Metrics(t)["lbbench_target_requests_total"], "worker")
			for id, n := range seen {
				if got[id] != float64(n) {
					t.Errorf("worker %s: client saw %d requests, metrics say %v", id, n, got[id])
				}
			}
			if err := tg.Stop(t, 10*time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		})
	}
}

func TestMetricsLintClean(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	for range 10 {
		if _, _, err := proctest.Get(tg.Addr); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("curl", "-sf", "http://"+tg.MetricsAddr+"/metrics").Output()
	if err != nil {
		t.Skip("curl not available")
	}
	problems, err := promlint.New(bytes.NewReader(out)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{
		"lbbench_target_open_connections", "lbbench_target_worker_cpu_seconds_total",
		"lbbench_target_worker_restarts_total", "lbbench_target_request_duration_seconds",
		"lbbench_target_accept_queue_connections", "lbbench_target_host_listen_overflows_total",
		"lbbench_target_host_listen_drops_total", "process_cpu_seconds_total", "go_goroutines",
	} {
		if !bytes.Contains(out, []byte("# TYPE "+name+" ")) {
			t.Errorf("metric %s missing", name)
		}
	}
	if !bytes.Contains(out, []byte(`lbbench_target_request_duration_seconds_count{model="reuseport"} 10`)) {
		t.Errorf("duration histogram does not count 10 requests:\n%s", grep(out, "request_duration_seconds_count"))
	}
}

func grep(b []byte, s string) string {
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestWorkerRestart kills a worker and expects a new process in its place,
// counted as a restart, while the others keep serving.
func TestWorkerRestart(t *testing.T) {
	for _, model := range []string{"single", "shared", "reuseport"} {
		t.Run(model, func(t *testing.T) {
			tg := proctest.StartTarget(t, "-model", model, "-workers", "2")
			pids := workerPIDs(t, tg)
			victim := pids["0"]
			syscall.Kill(victim, syscall.SIGKILL)
			deadline := time.Now().Add(10 * time.Second)
			for {
				now := workerPIDs(t, tg)
				if now["0"] != victim && now["0"] != 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("worker 0 (pid %d) not replaced", victim)
				}
				time.Sleep(50 * time.Millisecond)
			}
			m := tg.Metrics(t)
			if r := proctest.ByLabel(m["lbbench_target_worker_restarts_total"], "worker"); r["0"] != 1 || r["1"] != 0 {
				t.Errorf("restarts %v, want worker 0: 1, worker 1: 0", r)
			}
			seen := map[string]bool{}
			for range 40 {
				pid, _, err := proctest.Get(tg.Addr)
				if err != nil {
					t.Fatal(err)
				}
				seen[pid] = true
			}
			if seen[strconv.Itoa(victim)] {
				t.Errorf("killed pid %d still answering", victim)
			}
			if !strings.Contains(tg.Stderr.String(), fmt.Sprintf("worker 0 (pid %d)", victim)) {
				t.Errorf("restart not logged:\n%s", tg.Stderr.String())
			}
		})
	}
}

// workerPIDs maps worker id to the pid serving it now (the one with an
// open-connections gauge).
func workerPIDs(t *testing.T, tg *proctest.Target) map[string]int {
	out := map[string]int{}
	f := tg.Metrics(t)["lbbench_target_open_connections"]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var w string
		var pid int
		for _, l := range m.Label {
			switch l.GetName() {
			case "worker":
				w = l.GetValue()
			case "pid":
				pid, _ = strconv.Atoi(l.GetValue())
			}
		}
		out[w] = pid
	}
	return out
}

// TestGracefulStop sends SIGTERM while a slow request is in flight: the
// request completes, and the target exits 0.
func TestGracefulStop(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2", "-sleep", "700ms")
	res := make(chan error, 1)
	go func() { _, _, err := proctest.Get(tg.Addr); res <- err }()
	time.Sleep(200 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- tg.Stop(t, 10*time.Second) }()
	if err := <-res; err != nil {
		t.Errorf("in-flight request failed during stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("exit status after SIGTERM: %v", err)
	}
}

// TestWorkersDieWithSupervisor kills the supervisor with SIGKILL: its
// workers must not outlive it.
func TestWorkersDieWithSupervisor(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	kids := proctest.Children(tg.Cmd.Process.Pid)
	if len(kids) != 2 {
		t.Fatalf("children %v, want 2", kids)
	}
	tg.Cmd.Process.Kill()
	<-tg.Done()
	deadline := time.Now().Add(3 * time.Second)
	for _, k := range kids {
		for proctest.Alive(k) {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d outlived the supervisor", k)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestBadInput: one clear line, a non-zero exit within two seconds, and no
// process left behind.
func TestBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	metricsBusy := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	mb, err := net.Listen("tcp", metricsBusy)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	free := func() string { return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)) }

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-model", "reuseport", "-addr", busyAddr}, "listen " + busyAddr + ": address already in use"},
		{[]string{"-model", "shared", "-addr", busyAddr}, "listen " + busyAddr + ": address already in use"},
		{[]string{"-model", "single", "-addr", busyAddr}, "listen " + busyAddr + ": address already in use"},
		{[]string{"-addr", free(), "-metrics-addr", metricsBusy}, "listen metrics " + metricsBusy + ": address already in use"},
		{[]string{"-model", "fastest"}, `invalid value "fastest" for flag -model: want single, shared or reuseport`},
		{[]string{"-workers", "0"}, "-workers 0: want 1 to"},
		{[]string{"-workers", "100000"}, "-workers 100000: want 1 to"},
		{[]string{"-addr", "127.0.0.1"}, "bad address"},
		{[]string{"-addr", "127.0.0.1:99999"}, "port must be 0-65535"},
		{[]string{"-grace", "soon"}, "invalid value \"soon\" for flag -grace"},
		{[]string{"-accept", "fast"}, `invalid value "fast" for flag -accept: want netpoll, blocking or exclusive`},
		{[]string{"-model", "shared", "-dispatch", "least"}, "-dispatch applies to the single model only"},
		{[]string{"-nonsense"}, "flag provided but not defined: -nonsense"},
		{[]string{"-model", "shared", "-steer", "bpf-rr"}, "-steer bpf-rr applies to the reuseport model only"},
		{[]string{"-steer", "magic"}, `invalid value "magic" for flag -steer: want hash,`},
		{[]string{"-model", "shared", "-restart", "fd-handoff"}, "-restart fd-handoff goes with -model reuseport"},
		{[]string{"-restart", "gently"}, `invalid value "gently" for flag -restart: want reuseport-overlap,`},
		{[]string{"-restart-every", "1ms"}, "-restart-every 1ms"},
		{[]string{"-steer", "cpu", "-workers", "3"}, "-steer cpu needs one worker per CPU"},
		{[]string{"-addr", "127.0.0.1:23111", "-metrics-addr", "127.0.0.1:23111"}, "-addr and -metrics-addr are both 127.0.0.1:23111"},
		{[]string{"-addr", "127.0.0.1:23111", "-metrics-addr", "0.0.0.0:23111"}, "-addr and -metrics-addr are both"},
		{[]string{"-header-timeout", "0s"}, "-header-timeout and -idle-timeout must be positive"},
		{[]string{"-http", "fasthttp"}, `invalid value "fasthttp" for flag -http: want lean or nethttp`},
		{[]string{"-http", "nethttp", "-locality"}, "-locality needs -http lean"},
		{[]string{"-inproc", "-model", "single"}, "-inproc: the single model hands connections to worker processes"},
		{[]string{"-inproc", "-restart-every", "1s"}, "-inproc: in-process workers cannot be restarted"},
		{[]string{"-inproc", "-restart", "reuseport-overlap"}, "-inproc: in-process workers cannot be restarted"},
		{[]string{"-inproc", "-pin"}, "-inproc: goroutines cannot be pinned"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			args := c.args
			if !strings.Contains(strings.Join(args, " "), "-metrics-addr") {
				args = append(args, "-metrics-addr", free())
			}
			cmd := exec.Command(proctest.Bin(t, "target"), args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(2 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running after 2s; stderr:\n%s", stderr.String())
			}
			if err == nil {
				t.Fatalf("exit status 0; stderr:\n%s", stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, c.want) {
				t.Fatalf("stderr does not say %q:\n%s", c.want, out)
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n"); lines > 0 {
				t.Errorf("error is not one line:\n%s", out)
			}
			if time.Since(start) > 2*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if kids := proctest.Children(cmd.Process.Pid); len(kids) > 0 {
				t.Errorf("left processes behind: %v", kids)
			}
		})
	}
}
