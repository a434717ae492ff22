package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// TestTLSResumeAcrossRollingRestart: the workers derive their ticket key
// from the key file and the run's seed, so a successor opens the tickets
// its predecessor issued. Sessions begun before SIGHUP replaced every
// worker resume on the new workers, whatever the restart strategy; and
// under load with a worker replaced every 50 ms, loadgen -tls-resume
// keeps resuming, on the successors too.
func TestTLSResumeAcrossRollingRestart(t *testing.T) {
	for _, c := range []struct{ model, strategy string }{
		{"reuseport", "reuseport-overlap"},
		{"reuseport", "reuseport-migrate"},
		{"reuseport", "fd-handoff"},
		{"shared", "shared-inherit"},
		{"single", "dispatch"},
	} {
		t.Run(c.strategy, func(t *testing.T) {
			tg, cert := tlsTarget(t, "-model", c.model, "-restart", c.strategy, "-workers", "2")
			pem, err := os.ReadFile(cert)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(pem)

			// One session per client, each begun on the first workers.
			before := workerPIDs(t, tg)
			caches := make([]tls.ClientSessionCache, 8)
			for i := range caches {
				caches[i] = tls.NewLRUClientSessionCache(1)
				if _, resumed, err := tlsGetSession(tg.Addr, roots, caches[i]); err != nil || resumed {
					t.Fatalf("first handshake: resumed %v, %v", resumed, err)
				}
			}
			tg.Cmd.Process.Signal(syscall.SIGHUP)
			waitAllReplaced(t, tg, before)

			// Every session resumes, on a worker that did not issue it.
			for i, cache := range caches {
				pid, resumed, err := tlsGetSession(tg.Addr, roots, cache)
				if err != nil {
					t.Fatalf("after the restart: %v", err)
				}
				if !resumed {
					t.Errorf("client %d: a full handshake after the rolling restart, want its session resumed", i)
				}
				for _, old := range before {
					if pid == fmt.Sprint(old) {
						t.Errorf("client %d served by %s, a worker from before the restart", i, pid)
					}
				}
			}

			// Under load, a worker replaced every 50 ms.
			tg2, cert2 := tlsTarget(t, "-model", c.model, "-restart", c.strategy, "-workers", "2", "-restart-every", "50ms")
			d := loadgenDoc(t, "-c", "4", "-d", "1500ms", "-conn", "close", "-tls-resume", "-cacert", cert2, "-workers", "2", "-timeout", "2s",
				"https://"+tg2.Addr+"/")
			resumedByPID := handshakesBy(t, tg2, "pid", "resumed")
			t.Logf("%d requests, %d errors %v, tls %+v; resumed by %d pids", d.Requests, d.Errors, d.ErrorsByKind, d.TLS, len(resumedByPID))
			if d.TLS == nil || d.TLS.Resumed < (d.TLS.Full+d.TLS.Resumed)*9/10 {
				t.Errorf("loadgen under rolling restarts: tls %+v, want 9 in 10 handshakes resumed", d.TLS)
			}
			if len(resumedByPID) <= 2 {
				t.Errorf("resumed handshakes by pid %v: want successors (more pids than 2 workers) resuming too", resumedByPID)
			}
		})
	}
}

// waitAllReplaced waits until every worker of before has a new pid.
func waitAllReplaced(t *testing.T, tg *proctest.Target, before map[string]int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		after := workerPIDs(t, tg)
		changed := 0
		for w, pid := range before {
			if after[w] != 0 && after[w] != pid {
				changed++
			}
		}
		if changed == len(before) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker pids before SIGHUP %v, 10 s after %v", before, after)
		}
	}
}

// tlsGetSession sends one GET over a new TLS connection with a session
// cache (reading the response takes in the ticket the server sends after
// a TLS 1.3 handshake), and returns the X-Worker-Pid and whether the
// handshake resumed.
func tlsGetSession(addr string, roots *x509.CertPool, cache tls.ClientSessionCache) (string, bool, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		NextProtos: []string{"http/1.1"}, ClientSessionCache: cache})
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	rd := bufio.NewReader(c)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		return "", false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	io.Copy(io.Discard, rd) // to the close: any ticket after the response
	if resp.StatusCode != 200 {
		return "", false, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Worker-Pid"), c.ConnectionState().DidResume, nil
}
