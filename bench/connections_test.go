package main

import (
	"io"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

func crowdFlags() *matrixFlags {
	return &matrixFlags{Params: Params{Src: "127.0.0.2-127.0.0.5"}, warn: io.Discard}
}

// TestCrowdCountsEqualTarget: every connection of a crowd is opened,
// answered and counted for the worker that the target itself says
// accepted it (its accepted-connections counter, per pid), and held:
// the target's open-connections gauge counts them while they are.
func TestCrowdCountsEqualTarget(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "3")
	const n = 900
	c := Cell{Name: "Connections/test", Model: "reuseport", Workers: 3, Hold: &Hold{Conns: n}}
	cr, err := openCrowd(crowdFlags(), c, tg.Addr, targetServer{Target: tg.Target})
	if err != nil {
		t.Fatal(err)
	}
	defer cr.close()
	if cr.failed != 0 || len(cr.fds) != n {
		t.Fatalf("%d failed, %d held of %d", cr.failed, len(cr.fds), n)
	}
	m := tg.Metrics(t)
	accepted := proctest.ByLabel(m["lbbench_target_accepted_connections_total"], "pid")
	if len(accepted) != 3 {
		t.Fatalf("target counts %v", accepted)
	}
	for pid, k := range accepted {
		p, _ := strconv.Atoi(pid)
		if cr.perPID[p] != int(k) {
			t.Errorf("pid %s: the target accepted %v, the crowd counted %d (%v)", pid, k, cr.perPID[p], cr.perPID)
		}
	}
	open := 0.0
	for _, v := range proctest.ByLabel(m["lbbench_target_open_connections"], "pid") {
		open += v
	}
	if open != n {
		t.Errorf("the target holds %v connections open, want %d", open, n)
	}
	if cr.rssAfter <= cr.rssBefore {
		t.Errorf("server tree RSS %d before, %d after %d connections", cr.rssBefore, cr.rssAfter, n)
	}
	vals := map[string]float64{}
	for _, v := range cr.values() {
		vals[v.Unit] = v.Value
	}
	for _, u := range []string{"held-imbalance", "hash-imbalance", "all-answered-sec", "listen-overflows", "server-B/conn"} {
		if _, ok := vals[u]; !ok {
			t.Errorf("values lack %s: %v", u, vals)
		}
	}
	if vals["held-imbalance"] < 1 || vals["held-imbalance"] > 3 {
		t.Errorf("held-imbalance %v, want max/mean in [1, 3]", vals["held-imbalance"])
	}
}

// TestCrowdOverflowCost: a crowd against a short accept queue that no
// worker drains for 1.5 s overflows it; the kernel's counters say so,
// the dropped SYNs are retransmitted, and every connection is answered
// in the end, later than a second. The SYNs of one burst are retried
// together (at 1, 3, 7, 15 s), so each wave overflows the queue again:
// with 8 places, 200 connections did not all get in within 20 s; 64
// places admit them in a few waves.
func TestCrowdOverflowCost(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-backlog", "64")
	pid := tg.Ready.Workers[0].PID
	syscall.Kill(pid, syscall.SIGSTOP)
	resume := time.AfterFunc(1500*time.Millisecond, func() { syscall.Kill(pid, syscall.SIGCONT) })
	defer func() { resume.Stop(); syscall.Kill(pid, syscall.SIGCONT) }()
	const n = 200
	c := Cell{Name: "Connections/test", Model: "reuseport", Workers: 1, Hold: &Hold{Conns: n}}
	cr, err := openCrowd(crowdFlags(), c, tg.Addr, targetServer{Target: tg.Target})
	if err != nil {
		t.Fatal(err)
	}
	defer cr.close()
	if cr.failed != 0 || cr.perPID[pid] != n {
		t.Errorf("%d failed, worker %d answered %d of %d", cr.failed, pid, cr.perPID[pid], n)
	}
	if cr.answered < 1500*time.Millisecond {
		t.Errorf("every connection answered after %v, before the worker resumed", cr.answered)
	}
	// Host-wide counters: other traffic may add, never take away.
	if cr.delta["ListenOverflows"] < 1 || cr.delta["TCPSynRetrans"] < 1 {
		t.Errorf("ListenOverflows +%d, TCPSynRetrans +%d: want both above 0", cr.delta["ListenOverflows"], cr.delta["TCPSynRetrans"])
	}
}

// TestCrowdHAProxyThreads: HAProxy's threads share a pid; the crowd is
// counted per thread from HAProxy's own "show fd", every connection of
// it on one of the threads.
func TestCrowdHAProxyThreads(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	srv, err := haproxy(false)(serverOptions{addr: addr, workers: 2, conns: 2000})
	if err != nil {
		t.Skip(err) // not installed: make setup
	}
	defer srv.Stop()
	const n = 1000
	c := Cell{Name: "Connections/test", Model: "haproxy", Workers: 2, Hold: &Hold{Conns: n}}
	cr, err := openCrowd(crowdFlags(), c, addr, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer cr.close()
	if !cr.countable || len(cr.perPID) != 2 || cr.perPID[0]+cr.perPID[1] != n || cr.failed != 0 {
		t.Errorf("per thread %v (countable %v, %d failed), want %d over threads 0 and 1", cr.perPID, cr.countable, cr.failed, n)
	}
}
