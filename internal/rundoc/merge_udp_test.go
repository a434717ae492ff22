package rundoc

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
)

// udpRun is the document of a UDP run over flows flows with the given
// per-pid replies (requests) and flows answered first (connections).
func udpRun(t *testing.T, u load.UDPStats, per map[uint64]load.PIDCount, start time.Time) *Doc {
	t.Helper()
	r := result(nil)
	r.Options.URL, r.Options.Mode, r.Options.Proto, r.Options.Flows, r.Options.Rate = "udp://127.0.0.1:1", "", load.ProtoUDP, u.Flows, 1000
	r.Errors = map[string]int64{load.ErrLost: u.Lost}
	r.Start = start
	r.UDP = &u
	for pid, pc := range per {
		r.PerPID[pid] = &load.PIDCount{Requests: pc.Requests, Connections: pc.Connections}
		r.Requests += pc.Requests
		for range pc.Requests {
			r.Latency.RecordValue(int64(time.Millisecond))
		}
	}
	d := Build("UDP/model=reuseport", r, kernel.Observation{}, kernel.Host{}, 0, 1)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return &back
}

// TestMergeKeepsUDP: a merge of two UDP runs over flows of their own has
// a udp section with every figure: datagrams sent, answered, lost,
// duplicated, reordered, malformed, not sent; flows, flows answered by
// more than one worker, the first-worker share weighted by replies,
// rebinds, and where the lost went; per pid, replies and flows.
func TestMergeKeepsUDP(t *testing.T) {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	a := load.UDPStats{Flows: 8, Sent: 1000, Received: 990, Lost: 10, Duplicates: 1, Reordered: 2, Malformed: 3, SendFailed: 4,
		FlowsMultiWorker: 1, FirstWorkerShare: 0.9, Rebinds: 8, LoadgenSocketDrops: 6, TargetSocketDrops: 3, TargetSocketSeen: true, LostInBetween: 1}
	b := load.UDPStats{Flows: 12, Sent: 1500, Received: 1500, Duplicates: 5, Reordered: 1, SendFailed: 2,
		FlowsMultiWorker: 3, FirstWorkerShare: 0.6, Rebinds: 12, TargetSocketDrops: 3, TargetSocketSeen: true}
	docs := []*Doc{
		udpRun(t, a, map[uint64]load.PIDCount{101: {Requests: 500, Connections: 4}, 102: {Requests: 490, Connections: 4}}, start),
		udpRun(t, b, map[uint64]load.PIDCount{101: {Requests: 700, Connections: 5}, 103: {Requests: 800, Connections: 7}}, start.Add(time.Millisecond)),
	}
	m, err := Merge("x", docs, []string{"g1", "g2"})
	if err != nil {
		t.Fatal(err)
	}
	u := m.UDP
	if u == nil {
		t.Fatal("the merge has no udp section")
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"flows", int64(u.Flows), 20}, {"sent", u.Sent, 2500}, {"received", u.Received, 2490}, {"lost", u.Lost, 10},
		{"duplicates", u.Duplicates, 6}, {"reordered", u.Reordered, 3}, {"malformed", u.Malformed, 3}, {"send_failed", u.SendFailed, 6},
		{"flows_multi_worker", u.FlowsMultiWorker, 4}, {"rebinds", u.Rebinds, 20},
		{"loadgen_socket_drops", u.LoadgenSocketDrops, 6},
		// One host's target sockets over the same time: the larger count,
		// not the sum; the rest of the loss is in between.
		{"target_socket_drops", u.TargetSocketDrops, 3}, {"lost_in_between", u.LostInBetween, 1},
		{"replies", m.Requests, 2490}, {"pid 101 replies", m.PerPID["101"].Requests, 1200}, {"pid 101 flows", m.PerPID["101"].Connections, 9},
		{"pid 103 flows", m.PerPID["103"].Connections, 7},
	} {
		if c.got != c.want {
			t.Errorf("merged %s %d, want %d", c.name, c.got, c.want)
		}
	}
	if want := (0.9*990 + 0.6*1500) / 2490; math.Abs(u.FirstWorkerShare-want) > 1e-12 {
		t.Errorf("first-worker share %v, want %v (weighted by replies)", u.FirstWorkerShare, want)
	}
	if !u.TargetSocketSeen || m.Rate != 2000 {
		t.Errorf("target sockets seen %v, rate %v", u.TargetSocketSeen, m.Rate)
	}
}
