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

// TestGeneratorsKeepUDP: the udp scenario split over two generators
// writes, for every sample, a udp section whose datagram and flow
// counts are the sums of its two generators' own runs, a loss-ratio on
// every benchmark line, and a loss row in the report.
func TestGeneratorsKeepUDP(t *testing.T) {
	bin, _ := buildAll(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "200ms", "-warmup", "100ms",
		"-scenarios", "udp", "-generators", "2"}, &stdout, &stderr); code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	read := func(path string) *rundoc.Doc {
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
	samples, _ := filepath.Glob(filepath.Join(dir, "json", "*.json"))
	if len(samples) == 0 {
		t.Fatal("no samples")
	}
	for _, s := range samples {
		d := read(s)
		base := strings.TrimSuffix(filepath.Base(s), ".json")
		var sent, received, lost, flows, requests int64
		for _, g := range []string{"_g1.json", "_g2.json"} {
			gd := read(filepath.Join(dir, "json", "generators", base+g))
			if gd.UDP == nil {
				t.Fatalf("%s%s: no udp section", base, g)
			}
			sent, received, lost, flows, requests = sent+gd.UDP.Sent, received+gd.UDP.Received, lost+gd.UDP.Lost, flows+int64(gd.UDP.Flows), requests+gd.Requests
		}
		u := d.UDP
		if u == nil {
			t.Errorf("%s: the merged sample has no udp section", base)
			continue
		}
		if u.Sent != sent || u.Received != received || u.Lost != lost || int64(u.Flows) != flows || d.Requests != requests {
			t.Errorf("%s: merged %+v, %d replies; generators sum to sent %d, received %d, lost %d, flows %d, %d replies",
				base, *u, d.Requests, sent, received, lost, flows, requests)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "raw.txt"))
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "Benchmark") && !strings.Contains(l, " loss-ratio") {
			t.Errorf("raw.txt line without loss-ratio: %s", l)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(dir, "REPORT.md"))
	if !strings.Contains(string(rep), "| loss ratio |") {
		t.Errorf("REPORT.md has no loss row")
	}
}
