package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// Hostile servers against the real loadgen: every odd answer is counted
// as what it is, and a run that went wrong says so and exits non-zero.

// hostile serves every connection with handle until the test ends.
func hostile(t *testing.T, handle func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c, bufio.NewReader(c))
			})
		}
	}()
	return "http://" + ln.Addr().String() + "/"
}

// eachRequest calls answer for every request head on the connection.
func eachRequest(answer func(c net.Conn) bool) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		for {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if !answer(c) {
				return
			}
		}
	}
}

func answerWith(resp string) func(net.Conn, *bufio.Reader) {
	return eachRequest(func(c net.Conn) bool { _, err := io.WriteString(c, resp); return err == nil })
}

// runAny runs loadgen and returns its document, stdout+stderr and exit code.
func runAny(t *testing.T, args ...string) (*rundoc.Doc, string, int) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-json", out}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var d *rundoc.Doc
	if _, err := os.Stat(out); err == nil {
		d = readDoc(t, out)
	}
	return d, buf.String(), code
}

func TestHostileServers(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: 4242\r\n\r\nok"
	cases := []struct {
		name     string
		handle   func(net.Conn, *bufio.Reader)
		args     []string
		okWanted bool   // some successful responses
		kind     string // an error kind that must be counted
		code     int
		say      string // the summary says
	}{
		{"never answers", func(c net.Conn, r *bufio.Reader) { io.Copy(io.Discard, r) }, []string{"-c", "4", "-d", "1s"},
			false, "", 1, "still unanswered when the run ended"},
		{"HTTP/0.9 reply", func(c net.Conn, r *bufio.Reader) { http.ReadRequest(r); io.WriteString(c, "hello\n") },
			[]string{"-c", "2", "-n", "50"}, false, "malformed", 1, "no successful response"},
		{"TLS alert", func(c net.Conn, r *bufio.Reader) { c.Write([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46}) },
			[]string{"-c", "2", "-n", "50"}, false, "malformed", 1, "malformed"},
		{"closes at once", func(c net.Conn, r *bufio.Reader) {}, []string{"-c", "2", "-n", "50"}, false, "reset", 1, "reset"},
		{"100 Continue first", answerWith("HTTP/1.1 100 Continue\r\n\r\n" + ok), []string{"-c", "2", "-n", "200"}, true, "", 0, "200 ok"},
		{"chunked", answerWith("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Worker-Pid: 4242\r\n\r\n3\r\nok\n\r\n4;x=y\r\nmore\r\n0\r\n\r\n"),
			[]string{"-c", "2", "-n", "200"}, true, "", 0, "200 ok"},
		{"body to the close", func(c net.Conn, r *bufio.Reader) {
			http.ReadRequest(r)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Worker-Pid: 4242\r\n\r\nuntil the close")
		}, []string{"-c", "2", "-n", "200"}, true, "", 0, "200 ok"},
		{"404", answerWith("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), []string{"-c", "2", "-n", "100"}, false, "status", 1, "status 100"},
		{"bad chunk", answerWith("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), []string{"-c", "2", "-n", "50"}, false, "malformed", 1, "malformed"},
		{"stalls after a while", stallAfter(300), []string{"-c", "4", "-d", "2s"}, true, "", 1, "the server stopped answering"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := hostile(t, c.handle)
			start := time.Now()
			d, out, code := runAny(t, append(c.args, "-timeout", "3s", url)...)
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out)
			}
			if !strings.Contains(out, c.say) {
				t.Errorf("output does not say %q:\n%s", c.say, out)
			}
			if d == nil {
				t.Fatal("no JSON written")
			}
			if c.okWanted != (d.Requests > 0) {
				t.Errorf("%d successful responses", d.Requests)
			}
			if c.kind != "" && d.ErrorsByKind[c.kind] == 0 {
				t.Errorf("no %s errors counted: %v", c.kind, d.ErrorsByKind)
			}
			if (c.code != 0) != (len(d.Problems) > 0) {
				t.Errorf("problems in the JSON: %q", d.Problems)
			}
			if took := time.Since(start); took > 8*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}

// stallAfter answers n requests, then stops answering.
func stallAfter(n int) func(net.Conn, *bufio.Reader) {
	var mu sync.Mutex
	served := 0
	return eachRequest(func(c net.Conn) bool {
		mu.Lock()
		served++
		stall := served > n
		mu.Unlock()
		if stall {
			time.Sleep(10 * time.Second)
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: 7\r\n\r\nok")
		return true
	})
}

// TestBadWorkerPIDs: a worker-pid header that is not a pid is counted as
// unattributed, with a warning, and kept out of the fairness figures.
func TestBadWorkerPIDs(t *testing.T) {
	var mu sync.Mutex
	i := 0
	values := []string{"101", "102", "abc", "0", "99999999999999999999", "-5", "103"}
	url := hostile(t, eachRequest(func(c net.Conn) bool {
		mu.Lock()
		v := values[i%len(values)]
		i++
		mu.Unlock()
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: "+v+"\r\n\r\nok")
		return err == nil
	}))
	d, out, code := runAny(t, "-c", "1", "-n", "700", "-workers", "3", url)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if len(d.PerPID) != 3 || d.PerPID["0"] != nil {
		t.Errorf("per_pid %v: want 101, 102, 103 only", keysOf(d.PerPID))
	}
	u := d.Unattributed
	if u == nil || u.Requests != 400 || u.InvalidValues != 400 || u.Example == "" {
		t.Fatalf("unattributed %+v, want 400 requests with invalid values", u)
	}
	if d.Fairness.Requests.Workers != 3 || d.Fairness.Requests.Total != 300 || d.Fairness.Requests.MaxOverMean != 1 {
		t.Errorf("fairness %+v: want 3 workers with 100 each", d.Fairness.Requests)
	}
	if !strings.Contains(out, "not a pid") {
		t.Errorf("no warning in the summary:\n%s", out)
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBadOutputs: what cannot work is refused before the run, with exit
// status 2; a -restarts URL that fails after the run exits 1.
func TestBadOutputs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-json", "/nonexistent/dir/r.json"}, "-json: cannot write"},
		{[]string{"-bench", dir}, "-bench: " + dir + " is a directory"},
		{[]string{"-series", "/proc/r.csv"}, "-series: cannot write"},
		{[]string{"-metrics-addr", "bogus"}, "-metrics-addr"},
		{[]string{"-rate", "NaN", "-d", "1s"}, "-rate NaN"},
		{[]string{"-rate", "+Inf", "-d", "1s"}, "-rate +Inf"},
	} {
		start := time.Now()
		cmd := exec.Command(proctest.Bin(t, "loadgen"), append(c.args, "-d", "5s", "http://127.0.0.1:1/")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit 2", c.args, err)
		}
		if s := strings.TrimSpace(stderr.String()); !strings.Contains(s, c.want) || strings.Contains(s, "\n") {
			t.Errorf("%v: stderr %q, want one line with %q", c.args, s, c.want)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("%v: refused only after %v (after the run?)", c.args, time.Since(start))
		}
	}
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	_, out, code := runAny(t, "-n", "100", "-restarts", "http://127.0.0.1:1/restarts", "http://"+tg.Addr+"/")
	if code != 1 || !strings.Contains(out, "restarts") {
		t.Errorf("a failing -restarts URL: exit %d\n%s", code, out)
	}
}

// TestInterruptDuringWarmup: Ctrl-C before anything was measured writes
// no benchmark sample (rather than one of zeros) and exits non-zero.
func TestInterruptDuringWarmup(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	dir := t.TempDir()
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-warmup", "10s", "-d", "5s", "-json", dir+"/r.json", "-bench", dir+"/r.txt", "http://"+tg.Addr+"/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want 1\n%s", err, out.String())
	}
	if _, err := os.Stat(dir + "/r.txt"); err == nil {
		b, _ := os.ReadFile(dir + "/r.txt")
		t.Errorf("a benchmark sample was written:\n%s", b)
	}
	if !strings.Contains(out.String(), "nothing measured") {
		t.Errorf("output does not say nothing was measured:\n%s", out.String())
	}
}
