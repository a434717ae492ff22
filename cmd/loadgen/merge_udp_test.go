package main

import (
	"bytes"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// TestMergeUDPMatchesTargetCounters: two UDP generators started together
// over flows of their own (as bench -generators splits a UDP cell),
// merged: the merge keeps every UDP figure (datagrams sent, answered,
// lost, duplicated; flows, flows answered by more than one worker, the
// first-worker share weighted by replies), and its per-pid counts equal
// the datagrams each target worker says it answered.
func TestMergeUDPMatchesTargetCounters(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-proto", "udp", "-workers", "3")
	dir := t.TempDir()
	startAt := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	answered := func() map[string]float64 {
		return proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_datagrams_total"], "pid", "direction", "out")
	}
	before := answered()
	var files []string
	var wg sync.WaitGroup
	for g, flows := range []int{8, 12} {
		out := filepath.Join(dir, fmt.Sprintf("g%d.json", g))
		files = append(files, out)
		wg.Go(func() {
			cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-flows", fmt.Sprint(flows), "-rate", "2000", "-d", "2s",
				"-src", fmt.Sprintf("127.0.0.%d", 2+g), "-start-at", startAt, "-workers", "3", "-json", out, "udp://"+tg.Addr)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("generator %d: %v\n%s", g, err, b)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	after := answered()
	merged := filepath.Join(dir, "merged.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-json", merged}, files...)...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("merge: %v\n%s", err, stdout.String())
	}
	m := readDoc(t, merged)
	if m.UDP == nil {
		t.Fatalf("the merge has no udp section:\n%s", stdout.String())
	}
	var gens []*rundoc.Doc
	for _, f := range files {
		gens = append(gens, readDoc(t, f))
	}
	g0, g1 := gens[0].UDP, gens[1].UDP
	if g0 == nil || g1 == nil {
		t.Fatal("a generator's run has no udp section")
	}
	u := m.UDP
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"sent", u.Sent, g0.Sent + g1.Sent},
		{"received", u.Received, g0.Received + g1.Received},
		{"lost", u.Lost, g0.Lost + g1.Lost},
		{"duplicates", u.Duplicates, g0.Duplicates + g1.Duplicates},
		{"send_failed", u.SendFailed, g0.SendFailed + g1.SendFailed},
		{"flows", int64(u.Flows), 20},
		{"flows_multi_worker", u.FlowsMultiWorker, g0.FlowsMultiWorker + g1.FlowsMultiWorker},
		{"replies", m.Requests, gens[0].Requests + gens[1].Requests},
	} {
		if c.got != c.want {
			t.Errorf("merged %s %d, the generators' sum %d", c.name, c.got, c.want)
		}
	}
	share := (g0.FirstWorkerShare*float64(g0.Received) + g1.FirstWorkerShare*float64(g1.Received)) / float64(g0.Received+g1.Received)
	if math.Abs(u.FirstWorkerShare-share) > 1e-9 {
		t.Errorf("merged first-worker share %v, the generators' weighted %v", u.FirstWorkerShare, share)
	}
	if u.Received == 0 || u.Lost != 0 {
		t.Fatalf("udp %+v: want every datagram answered, to compare with the target", *u)
	}
	var flows int64
	for pid, n := range after {
		n -= before[pid]
		if pc := m.PerPID[pid]; (pc == nil && n > 0) || (pc != nil && float64(pc.Requests) != n) {
			t.Errorf("pid %s: the worker answered %v datagrams, the merge says %+v", pid, n, pc)
		}
	}
	for _, pc := range m.PerPID {
		flows += pc.Connections
	}
	if flows != 20 {
		t.Errorf("the merge's per-pid flows sum to %d, want 20", flows)
	}
}
