package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/proctest"
)

// TestMergeMatchesTargetCounters: three generators started together
// with -start-at, merged: per-pid counts equal the target's own counters,
// request for request, and the merged percentiles are those of one
// histogram holding every generator's values.
func TestMergeMatchesTargetCounters(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "3")
	dir := t.TempDir()
	startAt := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	before := tg.Metrics(t)
	var files []string
	var wg sync.WaitGroup
	for g := range 3 {
		out := filepath.Join(dir, fmt.Sprintf("g%d.json", g))
		files = append(files, out)
		wg.Go(func() {
			cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "4", "-n", "2000", "-conn", "close",
				"-src", fmt.Sprintf("127.0.0.%d", 2+g), "-start-at", startAt, "-workers", "3", "-json", out, "http://"+tg.Addr+"/")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("generator %d: %v\n%s", g, err, b)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	after := tg.Metrics(t)
	merged := filepath.Join(dir, "merged.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-json", merged}, files...)...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("merge: %v\n%s", err, stdout.String())
	}
	m := readDoc(t, merged)
	if m.Requests != 6000 || m.Errors != 0 || len(m.Inputs) != 3 {
		t.Fatalf("merged %d requests, %d errors, %d inputs", m.Requests, m.Errors, len(m.Inputs))
	}
	reqs := delta(before, after, "lbbench_target_requests_total")
	for pid, n := range reqs {
		if pc := m.PerPID[pid]; pc == nil || float64(pc.Requests) != n {
			t.Errorf("pid %s: the target served %v requests, the merge says %+v", pid, n, pc)
		}
	}
	all := load.NewHistogram()
	var starts []time.Time
	for _, f := range files {
		d := readDoc(t, f)
		h, err := hdrhistogram.Decode([]byte(d.Histograms["latency"]))
		if err != nil {
			t.Fatal(err)
		}
		all.Merge(h)
		starts = append(starts, d.Generator.Started)
	}
	for _, q := range []struct {
		name string
		got  float64
		pct  float64
	}{{"p50", m.Latency.P50, 50}, {"p99", m.Latency.P99, 99}, {"p99.9", m.Latency.P999, 99.9}, {"max", m.Latency.Max, 100}} {
		if want := float64(all.ValueAtQuantile(q.pct)) / 1e9; q.got != want {
			t.Errorf("merged %s %v, want %v", q.name, q.got, want)
		}
	}
	for _, s := range starts[1:] {
		if d := s.Sub(starts[0]).Abs(); d > 100*time.Millisecond {
			t.Errorf("generators started %v apart despite -start-at", d)
		}
	}
	if !strings.Contains(stdout.String(), "merged from 3 runs") {
		t.Errorf("summary lacks the per-run lines:\n%s", stdout.String())
	}
}

// TestHdrLog: -hdr-log writes an interval log HdrHistogram's reader
// reads, one histogram per second, every measured request in it.
func TestHdrLog(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	log := filepath.Join(t.TempDir(), "run.hlog")
	d, _ := runLoadgen(t, "-c", "4", "-d", "2s", "-hdr-log", log, "http://"+tg.Addr+"/")
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd := hdrhistogram.NewHistogramLogReader(f)
	var n int
	var total int64
	for {
		h, err := rd.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			break
		}
		n++
		total += h.TotalCount()
	}
	if n != len(d.Series) || total != d.Requests {
		t.Errorf("log: %d histograms of %d values; run: %d seconds, %d requests", n, total, len(d.Series), d.Requests)
	}
}

// TestMergeAndStartAtBadInput: one line and a non-zero status.
func TestMergeAndStartAtBadInput(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	for _, r := range []struct{ conn, out string }{{"close", a}, {"keepalive", b}} {
		if out, err := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "2", "-n", "100", "-conn", r.conn, "-json", r.out, "http://"+tg.Addr+"/").CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	junk := filepath.Join(dir, "junk.json")
	os.WriteFile(junk, []byte("not json"), 0o644)
	url := "http://" + tg.Addr + "/"
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"merge"}, 2, "name the -json files"},
		{[]string{"merge", a, b}, 1, "b.json: another connection mode"},
		{[]string{"merge", a, junk}, 1, "junk.json: not a loadgen -json file"},
		{[]string{"merge", a, filepath.Join(dir, "none.json")}, 1, "no such file"},
		{[]string{"-start-at", "tomorrow", "-n", "1", url}, 2, "want an RFC 3339 time"},
		{[]string{"-start-at", time.Now().Add(-time.Minute).Format(time.RFC3339), "-n", "1", url}, 2, "in the past"},
		{[]string{"-start-at", time.Now().Add(48 * time.Hour).Format(time.RFC3339), "-n", "1", url}, 2, "more than 24h0m0s away"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "loadgen"), c.args...), c.code, c.want)
		})
	}
}
