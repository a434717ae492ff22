package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("eBPF steering needs root (CI runs as root)")
	}
}

// TestSteerRoundRobinExact: bpf-rr spreads N*k connections exactly k per
// worker.
func TestSteerRoundRobinExact(t *testing.T) {
	needRoot(t)
	const n, k = 3, 10
	tg := proctest.StartTarget(t, "-model", "reuseport", "-steer", "bpf-rr", "-workers", strconv.Itoa(n))
	for range n * k {
		if _, _, err := proctest.Get(tg.Addr); err != nil {
			t.Fatal(err)
		}
	}
	got := proctest.ByLabel(tg.Metrics(t)["lbbench_target_accepted_connections_total"], "worker")
	for w := range n {
		if got[strconv.Itoa(w)] != k {
			t.Fatalf("accepted per worker %v, want exactly %d each", got, k)
		}
	}
}

// stalledShare pauses worker 0, drives new connections for a second,
// resumes it, and returns worker 0's share of the accepted connections.
func stalledShare(t *testing.T, steer string) float64 {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-steer", steer, "-workers", "3")
	pid := workerPIDs(t, tg)["0"]
	syscall.Kill(pid, syscall.SIGSTOP)
	out := filepath.Join(t.TempDir(), "r.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "16", "-d", "1s", "-conn", "close", "-timeout", "300ms",
		"-json", out, "http://"+tg.Addr+"/")
	cmd.Run() // errors (timeouts on the paused worker) are expected
	syscall.Kill(pid, syscall.SIGCONT)
	time.Sleep(300 * time.Millisecond) // let it accept its backlog
	got := proctest.ByLabel(tg.Metrics(t)["lbbench_target_accepted_connections_total"], "worker")
	total := got["0"] + got["1"] + got["2"]
	if total < 100 {
		t.Fatalf("%s: only %v connections accepted: %v", steer, total, got)
	}
	return got["0"] / total
}

// TestSteerLeastRoutesAroundStalledWorker: bpf-least counts a connection
// against a worker from the moment it is assigned, so a paused worker's
// growing backlog sends new connections elsewhere; the hash keeps sending
// it its third.
func TestSteerLeastRoutesAroundStalledWorker(t *testing.T) {
	needRoot(t)
	least := stalledShare(t, "bpf-least")
	hash := stalledShare(t, "hash")
	t.Logf("paused worker's share of connections: bpf-least %.3f, hash %.3f", least, hash)
	if least > 0.05 {
		t.Errorf("bpf-least gave the paused worker %.1f%% of the connections", 100*least)
	}
	if hash < 0.1 {
		t.Errorf("hash gave the paused worker only %.1f%%: the comparison shows nothing", 100*hash)
	}
}

// locality runs loadgen pinned to CPU 0 and returns the share of
// connections the target handled on the CPU they arrived on.
func locality(t *testing.T, args ...string) float64 {
	tg := proctest.StartTarget(t, append([]string{"-model", "reuseport", "-workers", "2"}, args...)...)
	d := filepath.Join(t.TempDir(), "r.json")
	cmd := exec.Command("taskset", "-c", "0", proctest.Bin(t, "loadgen"), "-q", "-c", "4", "-n", "2000", "-conn", "close", "-json", d, "http://"+tg.Addr+"/")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loadgen: %v %s", err, out)
	}
	m := tg.Metrics(t)["lbbench_target_connection_locality_total"]
	by := proctest.ByLabel(m, "locality")
	return by["local"] / (by["local"] + by["remote"])
}

// TestSteerCPULocality: with the client on one CPU, every connection's
// packets arrive there; the cBPF program sends it to the worker pinned to
// that CPU, where the hash sends half of them to the other CPU.
func TestSteerCPULocality(t *testing.T) {
	if runtime.NumCPU() != 2 {
		t.Skip("written for the 2-CPU machines this suite runs on")
	}
	cpu := locality(t, "-steer", "cpu")
	hash := locality(t, "-steer", "hash", "-pin")
	t.Logf("locality with the client on CPU 0: cpu %.3f, hash %.3f", cpu, hash)
	if cpu < 0.95 {
		t.Errorf("-steer cpu locality %.3f, want near 1", cpu)
	}
	if hash > 0.8 {
		t.Errorf("hash locality %.3f: expected about half", hash)
	}
}
