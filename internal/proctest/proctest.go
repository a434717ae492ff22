// Package proctest starts the project's real binaries for tests that cross
// process boundaries: it builds them once, picks free loopback ports,
// waits for readiness, and makes sure nothing is left running.
package proctest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lbbench/lbbench/internal/peers"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binPrefix names the folders the binaries are built in; each holds an
// owner file with the test process's pid.
const binPrefix = "lbbench-bin-"

// Main runs a package's tests and removes the binaries they built:
// func TestMain(m *testing.M) { proctest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// sweepBins removes the binary folders of test processes that are gone
// (killed before Main could clean up, or from before there was an owner
// file and over an hour old); a running test process's folder stays.
func sweepBins() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binPrefix+"*"))
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "owner")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && Alive(pid) {
				continue
			}
		} else if fi, err := os.Stat(d); err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		os.RemoveAll(d)
	}
}

// Bin returns the path of a freshly built binary of cmd/<name>.
func Bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		sweepBins()
		binDir, buildErr = os.MkdirTemp("", binPrefix)
		if buildErr != nil {
			return
		}
		if buildErr = os.WriteFile(filepath.Join(binDir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Target is a running bin/target on free loopback ports.
type Target struct {
	*peers.Target
	Addr, MetricsAddr string
}

// StartTarget starts bin/target on free loopback ports with extra args and
// waits until it says it is ready. It is stopped when the test ends.
func StartTarget(t testing.TB, args ...string) *Target {
	t.Helper()
	return StartTargetWith(t, nil, args...)
}

// StartTargetWith starts bin/target through a wrapper command that execs
// it, e.g. {"sh", "-c", `ulimit -n 256 && exec "$0" "$@"`}: the wrapper's
// arguments, then the target's path, then the target's arguments.
func StartTargetWith(t testing.TB, wrapper []string, args ...string) *Target {
	t.Helper()
	tg := &Target{
		Addr:        "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
	}
	args = append([]string{"-addr", tg.Addr, "-metrics-addr", tg.MetricsAddr}, args...)
	bin := Bin(t, "target")
	if len(wrapper) > 0 {
		args = append(append(wrapper[1:len(wrapper):len(wrapper)], bin), args...)
		bin = wrapper[0]
	}
	pt, err := peers.StartTarget(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	tg.Target = pt
	t.Cleanup(func() {
		// SIGTERM first: the target restores what it changed (sysctls).
		if err := pt.StopWithin(5 * time.Second); err != nil {
			t.Logf("target: %v", err)
		}
		if t.Failed() {
			t.Logf("target stderr:\n%s", pt.Stderr.String())
		}
	})
	return tg
}

// Stop sends SIGTERM and waits for the exit status; the test fails if the
// target is still running after timeout.
func (tg *Target) Stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	tg.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tg.Done():
		return tg.Err()
	case <-time.After(timeout):
		t.Fatalf("target still running %v after SIGTERM", timeout)
		return nil
	}
}

// Metrics scrapes the target's /metrics and parses it.
func (tg *Target) Metrics(t testing.TB) map[string]*Family {
	t.Helper()
	return Scrape(t, "http://"+tg.MetricsAddr+"/metrics")
}

// Family is a parsed metric family.
type Family = dtoFamily

// Scrape fetches and parses a Prometheus text exposition.
func Scrape(t testing.TB, url string) map[string]*Family {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// ByLabel sums a family's counter or gauge values by one label.
func ByLabel(f *Family, label string) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var v float64
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		}
		for _, l := range m.Label {
			if l.GetName() == label {
				out[l.GetValue()] += v
			}
		}
	}
	return out
}

// ByLabelWhere is ByLabel over the series whose label key has value
// want (e.g. direction="out").
func ByLabelWhere(f *Family, label, key, want string) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var v float64
		if m.Counter != nil {
			v = m.Counter.GetValue()
		} else if m.Gauge != nil {
			v = m.Gauge.GetValue()
		}
		match, name := false, ""
		for _, l := range m.Label {
			if l.GetName() == key && l.GetValue() == want {
				match = true
			}
			if l.GetName() == label {
				name = l.GetValue()
			}
		}
		if match {
			out[name] += v
		}
	}
	return out
}

// Children lists the pids whose parent is pid.
func Children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// Get sends one GET on a new connection that it closes, and returns the
// response's X-Worker-Pid and X-Worker-Id.
func Get(addr string) (pid, id string, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	kc := &KeepAliveConn{c: c, r: bufio.NewReader(c)}
	return kc.do(true)
}

// KeepAliveConn sends requests on one connection.
type KeepAliveConn struct {
	c net.Conn
	r *bufio.Reader
}

// Dial opens a keep-alive connection.
func Dial(addr string) (*KeepAliveConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &KeepAliveConn{c: c, r: bufio.NewReader(c)}, nil
}

// Do sends one request and reads the response (net/http parses it, not
// the code under test).
func (k *KeepAliveConn) Do() (pid, id string, err error) { return k.do(false) }

// Close closes the connection.
func (k *KeepAliveConn) Close() error { return k.c.Close() }

func (k *KeepAliveConn) do(closeConn bool) (string, string, error) {
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: test\r\n\r\n"
	if closeConn {
		req = "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(k.c, req); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return "", "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Worker-Pid"), resp.Header.Get("X-Worker-Id"), nil
}

type dtoFamily = dto.MetricFamily

// RunStatus runs cmd, for 5 s at most, and returns its exit status and
// its stderr, trimmed.
func RunStatus(t testing.TB, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v still running after 5s: %s", cmd.Args, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), strings.TrimSpace(stderr.String())
}

// WantOneLine runs cmd and checks what bad input must get: exit status
// code and one line on stderr that says want.
func WantOneLine(t testing.TB, cmd *exec.Cmd, code int, want string) {
	t.Helper()
	got, out := RunStatus(t, cmd)
	if got != code || !strings.Contains(out, want) || strings.Contains(out, "\n") {
		t.Errorf("%v: status %d, stderr %q; want %d and one line saying %q", cmd.Args[1:], got, out, code, want)
	}
}
