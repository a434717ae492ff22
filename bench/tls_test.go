package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/rundoc"
)

// TestTLSScenario: the tls scenario's cells make the handshakes their
// names say, on the target and on the real servers, over a certificate
// loadgen verifies, and leave no certificate behind.
func TestTLSScenario(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real servers are attributed by the kernel: root (CI runs as root)")
	}
	bin, _ := buildAll(t)
	dir := t.TempDir()
	certsBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "lbbench-tls-*"))
	var stdout, stderr bytes.Buffer
	code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "300ms", "-warmup", "100ms",
		"-scenarios", "tls", "-models", "reuseport"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	docs, _ := filepath.Glob(filepath.Join(dir, "json", "TLS_*.json"))
	if len(docs) != 9 {
		t.Fatalf("json %v, want 3 models x 3 handshake modes", docs)
	}
	for _, path := range docs {
		b, _ := os.ReadFile(path)
		var d rundoc.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		if !strings.HasPrefix(d.URL, "https://") || d.TLS == nil || d.Errors != 0 || d.Requests == 0 {
			t.Errorf("%s: url %s, tls %+v, %d requests, %d errors", name, d.URL, d.TLS, d.Requests, d.Errors)
			continue
		}
		switch {
		case strings.Contains(name, "handshake-resumed"):
			if d.TLS.Resumed < (d.TLS.Full+d.TLS.Resumed)*8/10 {
				t.Errorf("%s: %d resumed, %d full handshakes", name, d.TLS.Resumed, d.TLS.Full)
			}
		case strings.Contains(name, "conn-close"):
			if d.TLS.Resumed != 0 || d.TLS.Full < d.Requests {
				t.Errorf("%s: %d resumed, %d full handshakes for %d requests", name, d.TLS.Resumed, d.TLS.Full, d.Requests)
			}
		default: // keep-alive: the handshakes were made in the warm-up
			if d.TLS.Full+d.TLS.Resumed > d.Connections || d.Requests < 10*d.Connections {
				t.Errorf("%s: %+v handshakes on %d connections, %d requests", name, d.TLS, d.Connections, d.Requests)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "REPORT.md")); !bytes.Contains(b, []byte("## TLS termination")) {
		t.Error("REPORT.md has no TLS section")
	}
	if after, _ := filepath.Glob(filepath.Join(os.TempDir(), "lbbench-tls-*")); len(after) > len(certsBefore) {
		t.Errorf("certificate folders left behind: %v", after)
	}
}
