package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// Hostile clients against the real target: every bad input gets a clear
// answer (a status, or a close after a timeout), the target keeps serving
// others, its counters equal what the clients saw, and its memory stays
// bounded.

// exchange sends raw bytes on a new connection and returns what came
// back before the server closed it (or until timeout).
func exchange(t *testing.T, addr string, req []byte, timeout time.Duration) (string, time.Duration) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(timeout))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	return string(got), time.Since(start)
}

func status(resp string) string {
	line, _, _ := strings.Cut(resp, "\r\n")
	if f := strings.Fields(line); len(f) >= 2 {
		return f[1]
	}
	return "(nothing: " + strconv.Quote(line) + ")"
}

func TestHostileRequests(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	cookie := func(n int) string {
		return "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("a", n) + "\r\nConnection: close\r\n\r\n"
	}
	cases := []struct {
		name, req, want string
	}{
		// Heads up to 8 KiB (nginx's large_client_header_buffers) are served.
		{"cookie 4000", cookie(4000), "200"},
		{"cookie 5000", cookie(5000), "200"},
		{"cookie 8000", cookie(8000), "200"},
		{"cookie 9000", cookie(9000), "431"},
		{"no host on HTTP/1.1", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "400"},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
		{"LF-only lines", "GET / HTTP/1.1\nHost: x\n\n", "400"},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 64), "400"},
		{"2 KB of garbage", strings.Repeat("\x7f\x01garbage ", 200), "400"},
		{"garbage request line", "HELLO\r\n\r\n", "400"},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", "400"},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "400"},
		{"chunked body", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "501"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400"},
		{"HTTP/1.0 without host", "GET / HTTP/1.0\r\n\r\n", "200"},
	}
	before := tg.Metrics(t)
	seen := map[string]int{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, took := exchange(t, tg.Addr, []byte(c.req), 5*time.Second)
			if got := status(resp); got != c.want {
				t.Fatalf("status %s, want %s; response %q", got, c.want, resp)
			}
			if took > 2*time.Second {
				t.Errorf("answered after %v: the server waited for more", took)
			}
			seen[c.want[:1]+"xx"]++
		})
	}
	// Pipelined requests: two answers, in order, on one connection.
	resp, _ := exchange(t, tg.Addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 5*time.Second)
	if n := strings.Count(resp, "HTTP/1.1 200 OK"); n != 2 {
		t.Errorf("pipelined: %d responses in %q", n, resp)
	}
	seen["2xx"] += 2
	// Every response is counted, by status class.
	after := tg.Metrics(t)
	for class, n := range seen {
		got := sumWhere(after, "lbbench_target_requests_total", "code", class) - sumWhere(before, "lbbench_target_requests_total", "code", class)
		if got != float64(n) {
			t.Errorf("requests_total{code=%q} grew by %v, clients saw %d", class, got, n)
		}
	}
	checkServes(t, tg.Addr)
	checkWorkerMemory(t, tg, 64<<20)
}

// sumWhere sums a family's values whose label has the given value.
func sumWhere(m map[string]*proctest.Family, name, label, value string) float64 {
	return proctest.ByLabel(m[name], label)[value]
}

// checkServes: an ordinary client still gets its answer.
func checkServes(t *testing.T, addr string) {
	t.Helper()
	for range 5 {
		if _, _, err := proctest.Get(addr); err != nil {
			t.Fatalf("target no longer serves: %v", err)
		}
	}
}

// checkWorkerMemory: every worker's resident memory stays under limit.
func checkWorkerMemory(t *testing.T, tg *proctest.Target, limit int64) {
	t.Helper()
	for _, pid := range proctest.Children(tg.Cmd.Process.Pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				if kb*1024 > limit {
					t.Errorf("worker %d has %d KiB resident, over %d KiB", pid, kb, limit>>10)
				}
			}
		}
	}
}

// TestSlowloris: 200 connections that send a byte a second are answered
// 408 and closed when the header timeout runs out, while an ordinary
// client is served throughout.
func TestSlowloris(t *testing.T) {
	const n = 200
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2", "-header-timeout", "2s")
	var wg sync.WaitGroup
	answers := make(chan string, n)
	start := time.Now()
	for range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", tg.Addr, 2*time.Second)
			if err != nil {
				answers <- "dial: " + err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(8 * time.Second))
			req := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("z", 100)
			go func() {
				for i := range len(req) {
					if _, err := c.Write([]byte{req[i]}); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
			got, _ := io.ReadAll(c)
			answers <- status(string(got))
		})
	}
	time.Sleep(500 * time.Millisecond)
	checkServes(t, tg.Addr)
	wg.Wait()
	close(answers)
	for a := range answers {
		if a != "408" {
			t.Errorf("a slow client got %s, want 408", a)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("slow clients held for %v with a 2s header timeout", took)
	}
	m := tg.Metrics(t)
	if got := sumWhere(m, "lbbench_target_closed_connections_total", "reason", "header_timeout"); got != n {
		t.Errorf("closed for header_timeout: %v, want %d", got, n)
	}
	if got := sumWhere(m, "lbbench_target_requests_total", "code", "4xx"); got != n {
		t.Errorf("4xx responses: %v, want %d", got, n)
	}
	checkServes(t, tg.Addr)
	checkWorkerMemory(t, tg, 64<<20)
}

// TestIdleTimeout: a keep-alive connection left idle is closed after
// -idle-timeout, and counted so.
func TestIdleTimeout(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-idle-timeout", "1s")
	kc, err := proctest.Dial(tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if _, _, err := kc.Do(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = kc.Do() // immediately: still open
	if err != nil {
		t.Fatalf("second request on a fresh keep-alive connection: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, _, err := kc.Do(); err == nil {
		t.Fatalf("connection idle for %v still served", time.Since(start))
	}
	if got := sumWhere(tg.Metrics(t), "lbbench_target_closed_connections_total", "reason", "idle"); got != 1 {
		t.Errorf("closed for idle: %v, want 1", got)
	}
}

// TestOutOfDescriptors: with 256 descriptors per process and 1000
// keep-alive clients at once, no connection is accepted that cannot be
// served: the rest wait in the kernel's queue until descriptors free up,
// and every client gets its answer.
func TestOutOfDescriptors(t *testing.T) {
	const clients = 1000
	for _, v := range [][]string{
		{"-model", "shared", "-accept", "blocking"},
		{"-model", "shared", "-accept", "exclusive"},
		{"-model", "reuseport"},
		{"-model", "single"},
	} {
		t.Run(strings.Join(v, " "), func(t *testing.T) {
			tg := proctest.StartTargetWith(t, []string{"sh", "-c", `ulimit -n 256 && exec "$0" "$@"`}, append(v, "-workers", "2")...)
			var wg sync.WaitGroup
			var mu sync.Mutex
			fails := map[string]int{}
			for range clients {
				wg.Go(func() {
					err := holdOne(tg.Addr, 300*time.Millisecond)
					if err != nil {
						mu.Lock()
						fails[err.Error()]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(fails) > 0 {
				t.Errorf("clients failed: %v", fails)
			}
			m := tg.Metrics(t)
			accepted := sum(m["lbbench_target_accepted_connections_total"])
			served := sumWhere(m, "lbbench_target_requests_total", "code", "2xx")
			if accepted != clients || served != clients {
				t.Errorf("accepted %v, served %v, want %d each", accepted, served, clients)
			}
			if got := sumWhere(m, "lbbench_target_accept_errors_total", "reason", "fd_limit"); got == 0 {
				t.Errorf("no fd_limit accept errors counted: the limit was never met, so this tested nothing")
			}
			if got := sumWhere(m, "lbbench_target_accept_errors_total", "reason", "handoff_lost"); got != 0 {
				t.Errorf("%v handed-over connections lost", got)
			}
			if n := strings.Count(tg.Stderr.String(), "too many open files"); n > 20 {
				t.Errorf("%d log lines about descriptors: want at most about one a second", n)
			}
			checkServes(t, tg.Addr)
		})
	}
}

// holdOne opens a keep-alive connection, gets one answer, holds the
// connection a while, and closes it.
func holdOne(addr string, hold time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("closed without a response")
		}
		if errors.Is(err, syscall.ECONNRESET) {
			return errors.New("reset")
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	time.Sleep(hold)
	return nil
}

func sum(f *proctest.Family) float64 {
	var s float64
	for _, v := range proctest.ByLabel(f, "model") {
		s += v
	}
	return s
}

// TestGraceRunsOut: a stop whose grace period ends with a request still
// in flight cuts it and says so with a non-zero exit status.
func TestGraceRunsOut(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-sleep", "3s", "-grace", "300ms")
	go proctest.Get(tg.Addr)
	time.Sleep(300 * time.Millisecond)
	err := tg.Stop(t, 5*time.Second)
	var ee *exitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit %v after cutting an in-flight request, want non-zero", err)
	}
	if !strings.Contains(tg.Stderr.String(), "grace 300ms ran out") {
		t.Errorf("stderr does not say grace ran out:\n%s", tg.Stderr.String())
	}
}

// TestStopQuickly: after connection-per-request load, every model stops
// within a fraction of a second once nothing is in flight.
func TestStopQuickly(t *testing.T) {
	for _, model := range []string{"single", "shared", "reuseport"} {
		t.Run(model, func(t *testing.T) {
			tg := proctest.StartTarget(t, "-model", model, "-workers", "2")
			loadgen := proctest.Bin(t, "loadgen")
			if out, err := runCmd(loadgen, "-q", "-c", "50", "-d", "1s", "-conn", "close", "http://"+tg.Addr+"/"); err != nil {
				t.Logf("loadgen: %v %s", err, out)
			}
			start := time.Now()
			if err := tg.Stop(t, 5*time.Second); err != nil {
				t.Fatalf("exit: %v\n%s", err, tg.Stderr.String())
			}
			if took := time.Since(start); took > 700*time.Millisecond {
				t.Errorf("stop took %v", took)
			}
			if strings.Contains(tg.Stderr.String(), "still running after grace") {
				t.Errorf("workers had to be killed:\n%s", tg.Stderr.String())
			}
		})
	}
}

// TestSharedRefusesDuringDrain: once a shared-model target stops, a new
// connection is refused at once, not queued for the length of the drain
// to be reset at exit.
func TestSharedRefusesDuringDrain(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2", "-sleep", "1500ms")
	inflight := make(chan error, 1)
	go func() { _, _, err := proctest.Get(tg.Addr); inflight <- err }()
	time.Sleep(200 * time.Millisecond)
	tg.Cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	c, err := net.DialTimeout("tcp", tg.Addr, time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, rerr := io.ReadAll(c)
		c.Close()
		if rerr == nil && len(b) > 0 {
			t.Logf("served during the drain: %q", bytes.SplitN(b, []byte("\r\n"), 2)[0])
		} else {
			t.Errorf("connected during the drain, then %v after %v: queued and reset, not refused", rerr, time.Since(start))
		}
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial during the drain: %v, want refused", err)
	}
	if err := <-inflight; err != nil {
		t.Errorf("the request in flight when the stop began: %v", err)
	}
}

type exitError = exec.ExitError

func runCmd(bin string, args ...string) ([]byte, error) {
	return exec.Command(bin, args...).CombinedOutput()
}
