package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
	"github.com/lbbench/lbbench/internal/tlscert"
)

// TLS termination against the real target and the real loadgen: the
// target's own handshake counters, per worker, are checked against what
// loadgen says each connection's handshake was, and the pids that
// counted them against the pids that answered.

// tlsTarget starts the target terminating TLS with a throwaway
// certificate and returns it and the certificate file.
func tlsTarget(t *testing.T, args ...string) (*proctest.Target, string) {
	t.Helper()
	cert, key, err := tlscert.Write(t.TempDir(), tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return proctest.StartTarget(t, append(args, "-tls-cert", cert, "-tls-key", key)...), cert
}

// loadgenDoc runs bin/loadgen and returns its JSON document.
func loadgenDoc(t *testing.T, args ...string) *rundoc.Doc {
	t.Helper()
	out := filepath.Join(t.TempDir(), "run.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-json", out}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("loadgen %v: %v\n%s", args, err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var d rundoc.Doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	return &d
}

// handshakesBy returns the target's handshake counters for one result,
// by label (pid, worker).
func handshakesBy(t *testing.T, tg *proctest.Target, label, result string) map[string]float64 {
	t.Helper()
	return proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_tls_handshakes_total"], label, "result", result)
}

func total(m map[string]float64) (n float64) {
	for _, v := range m {
		n += v
	}
	return n
}

// loadgen makes one probe handshake (full, outside the measured run)
// before it starts, to turn certificate problems into one line.
const probeHandshakes = 1

// TestTLSHandshakesCounted: in every model, accept strategy and serving
// path, every response over TLS is a 200 from a worker, the workers'
// full-handshake counters add up to the connections loadgen made (one
// full handshake each, without -tls-resume), and the pids that counted
// handshakes are the workers', never the supervisor's (in single the
// supervisor only passes descriptors).
func TestTLSHandshakesCounted(t *testing.T) {
	const workers = 2
	for _, v := range []struct {
		name string
		args []string
	}{
		{"single/rr", []string{"-model", "single", "-dispatch", "rr"}},
		{"single/nethttp", []string{"-model", "single", "-http", "nethttp"}},
		{"shared/netpoll", []string{"-model", "shared"}},
		{"shared/blocking", []string{"-model", "shared", "-accept", "blocking"}},
		{"shared/exclusive/nethttp", []string{"-model", "shared", "-accept", "exclusive", "-http", "nethttp"}},
		{"reuseport/netpoll", []string{"-model", "reuseport"}},
		{"reuseport/exclusive", []string{"-model", "reuseport", "-accept", "exclusive"}},
		{"reuseport/nethttp", []string{"-model", "reuseport", "-http", "nethttp"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			tg, cert := tlsTarget(t, append(v.args, "-workers", strconv.Itoa(workers))...)
			url := "https://" + tg.Addr + "/"
			closeRun := loadgenDoc(t, "-c", "4", "-n", "200", "-conn", "close", "-cacert", cert, "-workers", strconv.Itoa(workers), url)
			keepRun := loadgenDoc(t, "-c", "2", "-n", "200", "-cacert", cert, "-workers", strconv.Itoa(workers), url)

			workerPIDs := map[string]bool{}
			for _, w := range tg.Ready.Workers {
				workerPIDs[strconv.Itoa(w.PID)] = true
			}
			var conns, full int64
			for _, d := range []*rundoc.Doc{closeRun, keepRun} {
				if d.Errors != 0 || d.Requests != 200 || d.TLS == nil {
					t.Fatalf("loadgen: %d requests, %d errors, tls %+v; want 200 and none", d.Requests, d.Errors, d.TLS)
				}
				for pid, c := range d.PerPID {
					if !workerPIDs[pid] {
						t.Errorf("X-Worker-Pid %s answered %d requests; the workers are %v", pid, c.Requests, workerPIDs)
					}
				}
				if d.TLS.Resumed != 0 {
					t.Errorf("loadgen resumed %d handshakes without -tls-resume", d.TLS.Resumed)
				}
				conns += d.Connections
				full += d.TLS.Full
			}
			if full != conns {
				t.Fatalf("loadgen: %d full handshakes on %d connections", full, conns)
			}
			got := handshakesBy(t, tg, "pid", "full")
			if want := float64(full + 2*probeHandshakes); total(got) != want {
				t.Errorf("target counted %v full handshakes (%v), loadgen made %d (+%d probes)", total(got), got, full, 2*probeHandshakes)
			}
			for pid, n := range got {
				if n > 0 && !workerPIDs[pid] {
					t.Errorf("pid %s counted %v handshakes; the workers are %v (supervisor %d)", pid, n, workerPIDs, tg.Ready.PID)
				}
			}
			if strings.HasPrefix(v.name, "single") {
				// Round-robin hand-over: both workers handshake.
				for pid := range workerPIDs {
					if got[pid] == 0 {
						t.Errorf("worker pid %s counted no handshakes; dispatch gave it connections", pid)
					}
				}
			}
			if r := handshakesBy(t, tg, "pid", "resumed"); total(r) != 0 {
				t.Errorf("target counted %v resumed handshakes; loadgen resumed none", total(r))
			}
			h := tg.Metrics(t)["lbbench_target_tls_handshake_duration_seconds"]
			if h == nil || len(h.Metric) != 1 || h.Metric[0].Histogram.GetSampleCount() != uint64(full+2*probeHandshakes) {
				t.Errorf("handshake-duration histogram %v, want %d observations", h, full+2*probeHandshakes)
			}
		})
	}
}

// TestTLSResume: with -tls-resume each loadgen slot's reconnects resume
// the session of its last connection, whichever worker the kernel gives
// it to (the workers share their ticket key), and the target counts them
// as resumed.
func TestTLSResume(t *testing.T) {
	for _, args := range [][]string{
		{"-model", "reuseport"},
		{"-model", "single", "-http", "nethttp"},
		{"-model", "shared", "-inproc"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			tg, cert := tlsTarget(t, append(args, "-workers", "2")...)
			d := loadgenDoc(t, "-c", "4", "-n", "300", "-conn", "close", "-tls-resume", "-cacert", cert, "-workers", "2", "https://"+tg.Addr+"/")
			if d.Errors != 0 || d.TLS == nil || d.TLS.Resumed < d.Connections*9/10 {
				t.Fatalf("loadgen: %d errors, tls %+v on %d connections; want nearly all resumed", d.Errors, d.TLS, d.Connections)
			}
			resumed, full := handshakesBy(t, tg, "worker", "resumed"), handshakesBy(t, tg, "worker", "full")
			if total(resumed) != float64(d.TLS.Resumed) || total(full) != float64(d.TLS.Full+probeHandshakes) {
				t.Errorf("target: %v resumed, %v full; loadgen: %d resumed, %d full (+%d probe)",
					total(resumed), total(full), d.TLS.Resumed, d.TLS.Full, probeHandshakes)
			}
			if len(resumed) < 2 || !allPositive(resumed) {
				t.Errorf("resumed handshakes by worker %v: want both workers to resume sessions the other began", resumed)
			}
		})
	}
}

func allPositive(m map[string]float64) bool {
	for _, v := range m {
		if v <= 0 {
			return false
		}
	}
	return true
}

// TestTLSFailures: clients that fail the handshake are counted by why,
// and the worker goes on serving TLS clients. A plain-HTTP request on
// the TLS port is told 400 in the clear; a client that sends nothing is
// cut at the header timeout; one that hangs up, or refuses the
// certificate, is counted as such.
func TestTLSFailures(t *testing.T) {
	for _, path := range []string{"lean", "nethttp"} {
		t.Run(path, func(t *testing.T) {
			tg, cert := tlsTarget(t, "-model", "reuseport", "-workers", "1", "-http", path, "-header-timeout", "300ms")
			pool := x509.NewCertPool()
			pem, _ := os.ReadFile(cert)
			pool.AppendCertsFromPEM(pem)

			// Plain HTTP on the TLS port.
			resp, _ := exchange(t, tg.Addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 2*time.Second)
			if !strings.HasPrefix(resp, "HTTP/1.0 400 ") || !strings.Contains(resp, "HTTPS server") {
				t.Errorf("plain request on the TLS port got %q, want net/http's 400", resp)
			}
			// Silent: connects, sends nothing.
			if _, took := exchange(t, tg.Addr, nil, 3*time.Second); took < 250*time.Millisecond || took > 2*time.Second {
				t.Errorf("a silent client was closed after %v, want the 300ms header timeout", took)
			}
			// Hangs up after half a ClientHello.
			c, err := net.Dial("tcp", tg.Addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
			c.Close()
			// Refuses the certificate (it trusts another CA).
			other, _, err := tlscert.Write(t.TempDir(), tlscert.Options{})
			if err != nil {
				t.Fatal(err)
			}
			otherPEM, _ := os.ReadFile(other)
			otherPool := x509.NewCertPool()
			otherPool.AppendCertsFromPEM(otherPEM)
			if _, err := tlsGet(tg.Addr, otherPool); err == nil {
				t.Error("a client that trusts another CA handshook")
			}

			// Still serving, over TLS.
			for range 3 {
				pid, err := tlsGet(tg.Addr, pool)
				if err != nil || pid != strconv.Itoa(tg.Ready.Workers[0].PID) {
					t.Fatalf("TLS request after the failures: pid %q, %v; want worker %d", pid, err, tg.Ready.Workers[0].PID)
				}
			}
			lintMetrics(t, tg)
			want := map[string]float64{"not_tls": 1, "timeout": 1, "eof": 1, "bad_certificate": 1, "full": 3}
			deadline := time.Now().Add(2 * time.Second)
			for {
				got := proctest.ByLabel(tg.Metrics(t)["lbbench_target_tls_handshakes_total"], "result")
				ok := true
				for r, n := range got {
					if n != want[r] {
						ok = false
					}
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("handshakes by result %v, want %v", got, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// tlsGet sends one GET over a new TLS connection that verifies the
// server against roots, and returns the X-Worker-Pid of a 200.
func tlsGet(addr string, roots *x509.CertPool) (string, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Worker-Pid"), nil
}

// TestTLSBadFlags: the certificate and key go together, must exist and
// must match; each problem is one line and exit 2, before the target
// listens.
func TestTLSBadFlags(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := tlscert.Write(dir, tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	_, otherKey, err := tlscert.Write(otherDir, tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(proctest.FreePort(t))
	bin := proctest.Bin(t, "target")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert", cert}, "-tls-cert needs -tls-key"},
		{[]string{"-tls-key", key}, "-tls-key needs -tls-cert"},
		{[]string{"-tls-cert", filepath.Join(dir, "missing.pem"), "-tls-key", key}, "missing.pem: no such file"},
		{[]string{"-tls-cert", cert, "-tls-key", otherKey}, "private key does not match public key"},
		{[]string{"-tls-cert", key, "-tls-key", key}, "-tls-key"},
		{[]string{"-tls-cert", cert, "-tls-key", key, "-proto", "udp"}, "TLS runs over TCP"},
	} {
		args := append([]string{"-addr", "127.0.0.1:" + port, "-metrics-addr", "off", "-workers", "1"}, c.args...)
		proctest.WantOneLine(t, exec.Command(bin, args...), 2, c.want)
	}
	// Nothing listened.
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("port %s taken after the refused starts: %v", port, err)
	}
	ln.Close()
}

// TestTLSTimeoutsAndStop: -header-timeout cuts a client that stalls in
// the middle of its handshake, -idle-timeout closes an idle TLS
// keep-alive connection, and SIGTERM closes an idle one at once and
// exits cleanly.
func TestTLSTimeoutsAndStop(t *testing.T) {
	for _, path := range []string{"lean", "nethttp"} {
		t.Run(path, func(t *testing.T) {
			tg, cert := tlsTarget(t, "-model", "reuseport", "-workers", "1", "-http", path,
				"-header-timeout", "300ms", "-idle-timeout", "600ms")
			pool := x509.NewCertPool()
			pem, _ := os.ReadFile(cert)
			pool.AppendCertsFromPEM(pem)

			// Half a ClientHello, then nothing.
			if _, took := exchange(t, tg.Addr, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 3*time.Second); took < 250*time.Millisecond || took > 2*time.Second {
				t.Errorf("a client stalled mid-handshake was closed after %v, want the 300ms header timeout", took)
			}
			if got := handshakesBy(t, tg, "result", "timeout")["timeout"]; got != 1 {
				t.Errorf("%v handshake timeouts counted, want 1", got)
			}

			// Idle after one request: closed at the idle timeout, not the
			// header timeout.
			c := tlsDial(t, tg.Addr, pool)
			start := time.Now()
			if err := tlsDo(c); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("idle connection: read %v, want EOF", err)
			}
			if took := time.Since(start); took < 500*time.Millisecond || took > 2*time.Second {
				t.Errorf("idle TLS connection closed after %v, want the 600ms idle timeout", took)
			}

			// Idle at SIGTERM: closed at once, clean exit.
			c = tlsDial(t, tg.Addr, pool)
			if err := tlsDo(c); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			if err := tg.Stop(t, 5*time.Second); err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("idle connection at SIGTERM: read %v, want EOF", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("stop with an idle TLS connection took %v", took)
			}
		})
	}
}

func tlsDial(t *testing.T, addr string, roots *x509.CertPool) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tlsDo sends one keep-alive GET on c and reads its 200.
func tlsDo(c *tls.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || br.Buffered() != 0 {
		return fmt.Errorf("status %d, %d bytes more", resp.StatusCode, br.Buffered())
	}
	return nil
}
