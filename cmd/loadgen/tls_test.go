package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
	"github.com/lbbench/lbbench/internal/tlscert"
)

// startTLSNginx starts nginx terminating TLS with a throwaway
// certificate, logging $pid and $ssl_session_reused per request.
func startTLSNginx(t *testing.T) (*peers.Nginx, string) {
	t.Helper()
	cert, key, err := tlscert.Write(t.TempDir(), tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: addr, Workers: 2, ReusePort: true, AccessLog: true, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ng.Stop() })
	return ng, cert
}

// TestTLSSessionsMatchNginxLog: nginx's own log is the ground truth of
// what kind of handshake each request came on and which worker served
// it. Without -tls-resume every connection is a full handshake (as ab);
// with it, every reconnect but each slot's first resumes (as wrk).
func TestTLSSessionsMatchNginxLog(t *testing.T) {
	ng, cert := startTLSNginx(t)
	url := "https://" + ng.Addr + "/"
	var total int64
	var docs []*rundoc.Doc
	check := func(name string, d *rundoc.Doc, wantResumed bool) {
		t.Helper()
		docs = append(docs, d)
		total += d.Requests
		awaitLog(t, total, func() int64 { r, _, _ := ng.LogCounts(); return sum(r) })
		if d.Errors != 0 || d.TLS == nil || d.TLSHandshake == nil || d.TLSHandshake.Count == 0 {
			t.Fatalf("%s: errors %d, tls %+v", name, d.Errors, d.TLS)
		}
		if got := d.TLS.Full + d.TLS.Resumed; got != d.Connections {
			t.Errorf("%s: %d handshakes counted for %d connections", name, got, d.Connections)
		}
		if wantResumed && d.TLS.Resumed < d.Connections*9/10 {
			t.Errorf("%s: %d of %d handshakes resumed, want nearly all", name, d.TLS.Resumed, d.Connections)
		}
		if !wantResumed && d.TLS.Resumed != 0 {
			t.Errorf("%s: %d handshakes resumed without -tls-resume", name, d.TLS.Resumed)
		}
	}
	d, out := runLoadgen(t, "-c", "4", "-n", "600", "-conn", "close", "-cacert", cert, "-workers", "2", url)
	check("full", d, false)
	if !strings.Contains(out, "TLS ") || !strings.Contains(out, "Handshake") {
		t.Errorf("summary has no TLS lines:\n%s", out)
	}
	resumed0, full0, err := ng.SessionReuse()
	if err != nil {
		t.Fatal(err)
	}
	if resumed0 != 0 || int64(full0) != d.Requests {
		t.Errorf("nginx log: %d resumed, %d full; want 0 and %d", resumed0, full0, d.Requests)
	}

	d, _ = runLoadgen(t, "-c", "4", "-n", "600", "-conn", "close", "-tls-resume", "-insecure", url)
	check("resume", d, true)
	resumed, full, err := ng.SessionReuse()
	if err != nil {
		t.Fatal(err)
	}
	if int64(resumed-resumed0) != d.TLS.Resumed || int64(full-full0) != d.TLS.Full {
		t.Errorf("nginx log: %d resumed, %d full; loadgen %d resumed, %d full", resumed-resumed0, full-full0, d.TLS.Resumed, d.TLS.Full)
	}

	d, _ = runLoadgen(t, "-c", "4", "-n", "2000", "-reqs-per-conn", "100", "-insecure", "-tls-version", "1.2", url)
	check("keepalive", d, false)
	if d.Connections < 20 || d.Connections > 24 {
		t.Errorf("keep-alive over TLS made %d connections for 2000 requests at 100 per connection", d.Connections)
	}

	// Per worker, the three runs together equal nginx's $pid log.
	reqs, conns, err := ng.LogCounts()
	if err != nil {
		t.Fatal(err)
	}
	for pid := range reqs {
		var r, c int64
		for _, doc := range docs {
			if pc := doc.PerPID[pid]; pc != nil {
				r += pc.Requests
				c += pc.Connections
			}
		}
		if r != int64(reqs[pid]) || c != int64(conns[pid]) {
			t.Errorf("pid %s: loadgen %d requests %d connections; nginx log %d and %d", pid, r, c, reqs[pid], conns[pid])
		}
	}
}

// TestTLSKernelAttribution: the kernel's attribution does not care what
// the bytes are: over TLS it names nginx's workers as their log does.
func TestTLSKernelAttribution(t *testing.T) {
	needRoot(t)
	ng, _ := startTLSNginx(t)
	d, _ := runLoadgen(t, "-c", "4", "-n", "800", "-conn", "close", "-insecure", "-attribute", "both", "https://"+ng.Addr+"/")
	if a := d.Attribution; d.Errors != 0 || a.Unresolved != 0 || a.Disagreements != 0 || a.Recorded < d.Connections {
		t.Fatalf("errors %d, attribution %+v", d.Errors, a)
	}
	awaitLog(t, d.Requests, func() int64 { r, _, _ := ng.LogCounts(); return sum(r) })
	reqs, _, err := ng.LogCounts()
	if err != nil {
		t.Fatal(err)
	}
	for pid, n := range reqs {
		if pc := d.PerPID[pid]; pc == nil || pc.Requests != int64(n) {
			t.Errorf("pid %s: nginx logged %d requests, kernel attribution %+v", pid, n, pc)
		}
	}
}

// tlsServer serves https on a free loopback port with Go's server and
// the given config changes; it answers like the target (X-Worker-Pid).
func tlsServer(t *testing.T, cert, key string, edit func(*tls.Config)) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	if edit != nil {
		edit(cfg)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Worker-Pid", "1")
		w.Write([]byte("ok\n"))
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// nodeH2 starts Node's HTTP/2-only server (http2.createSecureServer
// without allowHTTP1), which refuses a client that offers only http/1.1
// with the no_application_protocol alert, as h2-only servers do. (Go's
// own server falls back to no ALPN instead.)
func nodeH2(t *testing.T, cert, key string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node missing: make setup installs it")
	}
	const js = `const fs = require('fs');
const s = require('http2').createSecureServer({cert: fs.readFileSync(process.argv[1]), key: fs.readFileSync(process.argv[2])}, (q, r) => r.end('ok\\n'));
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();`
	cmd := exec.Command("node", "-e", js, cert, key)
	stdin, err := cmd.StdinPipe() // node exits when the test closes it
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	var port int
	if _, err := fmt.Fscan(out, &port); err != nil {
		t.Fatalf("node h2 server: %v", err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// TestTLSBadInput: a problem every handshake would have is one line and
// exit 2 before any load; one the run can count is counted.
func TestTLSBadInput(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := tlscert.Write(dir, tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	expired, expiredKey, err := tlscert.Write(t.TempDir(), tlscert.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	good := tlsServer(t, cert, key, nil)
	old := tlsServer(t, expired, expiredKey, nil)
	h2 := nodeH2(t, cert, key)
	only13 := tlsServer(t, cert, key, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 })
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "10", "https://" + good + "/"}, "certificate"},
		{[]string{"-n", "10", "-cacert", expired, "https://" + old + "/"}, "expired"},
		{[]string{"-n", "10", "-insecure", "https://" + h2 + "/"}, "http/1.1"},
		{[]string{"-n", "10", "-insecure", "-tls-version", "1.2", "https://" + only13 + "/"}, "version"},
		{[]string{"-n", "10", "-cacert", dir + "/missing.pem", "https://" + good + "/"}, "-cacert"},
		{[]string{"-n", "10", "-cacert", key, "https://" + good + "/"}, "no PEM certificate"},
		{[]string{"-n", "10", "-tls-version", "1.1", "https://" + good + "/"}, "want 1.2 or 1.3"},
		{[]string{"-n", "10", "-tls-resume", "http://" + good + "/"}, "go with an https:// URL"},
	} {
		cmd := exec.Command(proctest.Bin(t, "loadgen"), c.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want 2", c.args, err)
		}
		s := strings.TrimSpace(stderr.String())
		if !strings.Contains(s, c.want) || strings.Contains(s, "\n") || stdout.Len() != 0 {
			t.Errorf("%v: stderr %q (stdout %d bytes), want one line with %q and no load", c.args, s, stdout.Len(), c.want)
		}
	}

	// The run works once the certificate is trusted.
	if d, _ := runLoadgen(t, "-n", "50", "-c", "2", "-cacert", cert, "https://"+good+"/"); d.Requests != 50 || d.TLS.Full == 0 {
		t.Errorf("trusted run: %d requests, tls %+v", d.Requests, d.TLS)
	}
}

// TestTLSClientOnPlainPort: https to a port that speaks plain HTTP, and
// to one that never answers the ClientHello, are counted by reason, as
// errors of kind tls and timeout.
func TestTLSClientOnPlainPort(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	d := runFailing(t, "-n", "20", "-c", "2", "-insecure", "https://"+tg.Addr+"/")
	if d.ErrorsByKind["tls"] == 0 || d.TLS == nil || d.TLS.Failures["not_tls"] != d.ErrorsByKind["tls"] {
		t.Errorf("https to a plain port: errors %v, tls %+v", d.ErrorsByKind, d.TLS)
	}
	// The plain server's side: each ClientHello was a request it could
	// not parse (400, closed as bad_request), and it goes on serving.
	if bad := proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_closed_connections_total"], "reason", "reason", "bad_request")["bad_request"]; bad < float64(d.ErrorsByKind["tls"]) {
		t.Errorf("the plain target closed %v connections as bad_request, loadgen failed %d handshakes on it", bad, d.ErrorsByKind["tls"])
	}
	if pid, _, err := proctest.Get(tg.Addr); err != nil || pid != strconv.Itoa(tg.Ready.Workers[0].PID) {
		t.Errorf("plain request after the TLS clients: pid %q, %v", pid, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // read nothing, answer nothing
		}
	}()
	d = runFailing(t, "-d", "2s", "-c", "2", "-timeout", "500ms", "-insecure", "https://"+ln.Addr().String()+"/")
	if d.ErrorsByKind["timeout"] == 0 || d.TLS.Failures["timeout"] != d.ErrorsByKind["timeout"] {
		t.Errorf("stalled handshake: errors %v, tls %+v", d.ErrorsByKind, d.TLS)
	}
}

// runFailing runs loadgen on a run that must fail (exit 1: nothing
// answered) and returns its document.
func runFailing(t *testing.T, args ...string) *rundoc.Doc {
	t.Helper()
	out := t.TempDir() + "/run.json"
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-json", out}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("%v: exit %v, want 1 (nothing answered)\n%s", args, err, stderr.String())
	}
	return readDoc(t, out)
}

// TestTLSNetns: https from a client namespace to nginx in the target's,
// attributed by the kernel: the sockets the TLS driver opens belong to
// the namespace -netns names.
func TestTLSNetns(t *testing.T) {
	needRoot(t)
	top, err := netpath.Up(netpath.Options{Clients: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Down()
	cert, key, err := tlscert.Write(t.TempDir(), tlscert.Options{Hosts: []string{top.Service.String()}})
	if err != nil {
		t.Fatal(err)
	}
	addr := top.Service.String() + ":" + strconv.Itoa(proctest.FreePort(t))
	ng, err := peers.StartNginx(peers.NginxOptions{NetNS: top.Target, Addr: addr, Workers: 2, ReusePort: true, AccessLog: true, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Stop()
	c := top.Clients[0]
	d, _ := runLoadgen(t, "-netns", c.NS, "-src", c.Src, "-c", "4", "-n", "400", "-conn", "close", "-cacert", cert, "-attribute", "both", "https://"+addr+"/")
	if a := d.Attribution; d.Errors != 0 || d.TLS.Full != d.Connections || a.Disagreements != 0 || a.Unresolved != 0 {
		t.Fatalf("errors %v, tls %+v, attribution %+v", d.ErrorsByKind, d.TLS, a)
	}
	awaitLog(t, d.Requests, func() int64 { r, _, _ := ng.LogCounts(); return sum(r) })
	if _, full, _ := ng.SessionReuse(); int64(full) != d.Requests {
		t.Errorf("nginx logged %d full-handshake requests, loadgen %d", full, d.Requests)
	}
}

// TestPlainClientOnTLSPort: http:// to a port that terminates TLS (the
// target, nginx) fails the run with the one line that says what to do,
// not that the target seems down; the target counts each plain request
// as a not_tls handshake failure and goes on serving TLS.
func TestPlainClientOnTLSPort(t *testing.T) {
	cert, key, err := tlscert.Write(t.TempDir(), tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-tls-cert", cert, "-tls-key", key)
	ng, _ := startTLSNginx(t)
	for _, addr := range []string{tg.Addr, ng.Addr} {
		out := t.TempDir() + "/run.json"
		cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-n", "20", "-c", "2", "-json", out, "http://"+addr+"/")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("http:// to the TLS port %s: exit %v, want 1\n%s", addr, err, stderr.String())
		}
		if s := strings.TrimSpace(stderr.String()); strings.Contains(s, "\n") || !strings.Contains(s, "completes TLS handshakes: use https://"+addr+"/") {
			t.Errorf("http:// to the TLS port %s: stderr %q, want one line saying to use https://", addr, s)
		}
		if d := readDoc(t, out); d.Requests != 0 || d.Errors != 20 {
			t.Errorf("http:// to the TLS port %s: %d requests, %d errors %v", addr, d.Requests, d.Errors, d.ErrorsByKind)
		}
	}
	notTLS := proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_tls_handshakes_total"], "result", "result", "not_tls")["not_tls"]
	if notTLS != 20 {
		t.Errorf("the target counted %v not_tls handshakes, loadgen sent 20 plain requests", notTLS)
	}
	if d, _ := runLoadgen(t, "-n", "10", "-c", "1", "-cacert", cert, "https://"+tg.Addr+"/"); d.Requests != 10 {
		t.Errorf("https after the plain clients: %d requests", d.Requests)
	}
}

// TestTLSSessionsMatchHAProxyLog: HAProxy's log (ssl_fc_is_resumed per
// request) is the ground truth for the tls scenario's HAProxy: every
// request a full handshake without -tls-resume, and loadgen's resumed
// and full counts exactly with it.
func TestTLSSessionsMatchHAProxyLog(t *testing.T) {
	cert, key, err := tlscert.Write(t.TempDir(), tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	hp, err := peers.StartHAProxy(peers.HAProxyOptions{Addr: addr, Threads: 2, Log: true, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Stop() })
	st, err := hp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var resumed0, full0 int
	for _, c := range []struct {
		name string
		args []string
	}{{"full", nil}, {"resumed", []string{"-tls-resume"}}} {
		d, _ := runLoadgen(t, append(c.args, "-c", "4", "-n", "400", "-conn", "close", "-cacert", cert, "-workers", "2", "https://"+addr+"/")...)
		var resumed, full int
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resumed, full, err = st.SessionReuse(); err != nil {
				t.Fatal(err)
			}
			if int64(resumed+full) >= int64(resumed0+full0)+d.Requests || time.Now().After(deadline) {
				break
			}
		}
		if d.Errors != 0 || d.TLS == nil || int64(resumed-resumed0) != d.TLS.Resumed || int64(full-full0) != d.TLS.Full {
			t.Errorf("%s: HAProxy's log %d resumed, %d full; loadgen %d errors, tls %+v", c.name, resumed-resumed0, full-full0, d.Errors, d.TLS)
		}
		if c.name == "full" && resumed != 0 || c.name == "resumed" && d.TLS.Resumed < d.Connections*9/10 {
			t.Errorf("%s: %d of %d handshakes resumed", c.name, d.TLS.Resumed, d.Connections)
		}
		resumed0, full0 = resumed, full
	}
}
