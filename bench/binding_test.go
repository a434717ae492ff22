package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBindingScenario: every claim is a raw.txt record named case=<claim>
// and a row of the report (or, not as root, says once why it was
// skipped).
func TestBindingScenario(t *testing.T) {
	bin, _ := buildAll(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-scenarios", "binding"}, &stdout, &stderr); code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "raw.txt"))
	rep, _ := os.ReadFile(filepath.Join(dir, "REPORT.md"))
	for _, c := range bindingCases {
		if c.name == "other-uid-join" && os.Geteuid() != 0 {
			if !strings.Contains(stderr.String(), "binding other-uid-join: skipped") {
				t.Errorf("no line saying why other-uid-join was skipped:\n%s", stderr.String())
			}
			continue
		}
		if !strings.Contains(string(raw), "BenchmarkBinding/case="+c.name+" ") {
			t.Errorf("raw.txt lacks case=%s:\n%s", c.name, raw)
		}
		if !strings.Contains(string(rep), "| case="+c.name+" |") {
			t.Errorf("REPORT.md lacks a row for case=%s", c.name)
		}
	}
}
