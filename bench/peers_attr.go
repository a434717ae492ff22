package main

import (
	"context"
	"fmt"
	"slices"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// What kernel attribution costs the client: loadgen against the target
// at its maximum, counting by the target's header, by the kernel's
// accepts only (the serving hook named away, as on a kernel without it),
// by who served each response (both programs, as -attribute kernel
// does) and by who served alone (-acceptors=false), in turn.

// attributionCells are the ways of attributing compared, the first the
// base.
var attributionCells = []attributionCell{
	{"header", nil, nil, "", false},
	{"kernel-accepts", []string{"LBBENCH_KATTR_SERVE_HOOK=lbbench_none"}, []string{"-attribute", "kernel"}, load.CountsAccepts, false},
	{"kernel-served", nil, []string{"-attribute", "kernel"}, load.CountsServed, false},
	{"kernel-served-only", nil, []string{"-attribute", "kernel", "-acceptors=false"}, load.CountsServed, true},
}

var peerAttributionSections = []results.Section{
	{
		Name: "PeerAttribution", Filter: "/side:client /load:max", Title: "What kernel attribution costs at the client's maximum", Cols: "/impl", Rows: "/conn",
		About: "loadgen against the target (reuseport) at its maximum, attributing each response by the target's X-Worker-Pid header, " +
			"by the kernel's record of accepts only, by the thread the kernel saw send it (accepts and sends both traced) and by that thread alone (-acceptors=false: no program on every system call), in turn " +
			"within each round; client CPU is loadgen's in the measured part (loading the programs, ~0.15 s once per run, is left out). The BPF programs run on every system call's exit and every socket send of the host, so the server pays " +
			"too: the rate is the pair's.",
		Metrics: []results.Metric{
			{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "client CPU per request", Summary: true},
		},
	},
	{
		Name: "PeerAttribution", Filter: "/side:client /load:equal", Title: "What kernel attribution costs at an equal offered load", Cols: "/impl", Rows: "/conn",
		About: "the same ways of attributing, in an open loop at the same rate (-equal-load times the header cell's maximum in the same round): " +
			"what each costs per request on both sides, with no feedback from one side's speed into the other's idle time. Server CPU is the target's whole process tree's.",
		Metrics: []results.Metric{
			{Unit: "cpu-sec/req", Label: "client CPU per request", Summary: true}, {Unit: "server-cpu-sec/req", Label: "server CPU per request", Summary: true},
			{Unit: "p99-sec", Label: "p99 latency"},
		},
	},
}

// An attributionCell is one way of attributing: loadgen's environment
// and flags, and what the run must say it counted.
type attributionCell struct {
	impl       string
	env, extra []string
	counts     string
	untraced   bool // accepts not traced (-acceptors=false)
}

// attributionCosts runs every attribution cell once per connection mode
// at the client's maximum, then at an equal offered load, in an order
// that rotates with the round.
func (p *peerRun) attributionCosts(ctx context.Context, target peerServer, round int) error {
	cells := slices.Clone(attributionCells)
	for range round % len(cells) {
		cells = append(cells[1:], cells[0])
	}
	url := "http://" + target.addr + "/"
	for _, conn := range []string{"keepalive", "close"} {
		var base float64 // the header cell's maximum
		for _, c := range cells {
			run, err := p.loadgenOn(ctx, p.budget.Clients, c.env, url, conn, 0, c.extra...)
			if err != nil {
				return err
			}
			if err := checkAttribution(c, run.doc); err != nil {
				return err
			}
			if c.impl == attributionCells[0].impl {
				base = run.doc.RequestsPerSec
			}
			// The measured part's CPU, as loadgen counts it: loading the
			// BPF programs (~0.15 s, reading the kernel's BTF) is paid once
			// per run, not per request.
			cpu := run.doc.SelfCheck.CPUSeconds / float64(max(run.doc.Requests, 1))
			p.progress.step("round %d attribution %s, %s: %.0f req/s, %.1fµs client CPU per request", round+1, c.impl, conn, run.doc.RequestsPerSec, cpu*1e6)
			if err := p.add(fmt.Sprintf("PeerAttribution/side=client/load=max/impl=%s/conn=%s", c.impl, conn), run.doc.Requests,
				benchfmt.Value{Value: run.doc.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: cpu, Unit: "cpu-sec/req"}); err != nil {
				return err
			}
		}
		for _, c := range cells {
			if err := p.attributionEqual(ctx, target, c, conn, p.f.fraction*base, round); err != nil {
				return err
			}
		}
	}
	return nil
}

// attributionEqual runs one attribution cell in an open loop at rate,
// metering the target's process tree meanwhile.
func (p *peerRun) attributionEqual(ctx context.Context, target peerServer, c attributionCell, conn string, rate float64, round int) error {
	run, used, err := metered(p.m, target.root, func() (*loadgenRun, error) {
		return p.loadgenOn(ctx, p.budget.Clients, c.env, "http://"+target.addr+"/", conn, rate, c.extra...)
	})
	if err != nil {
		return err
	}
	d := run.doc
	if err := checkAttribution(c, d); err != nil {
		return err
	}
	client := d.SelfCheck.CPUSeconds / float64(max(d.Requests, 1))
	server, _ := perReq(used, d.Requests)
	p.progress.step("round %d attribution %s, %s at %.0f req/s offered: %.1fµs client and %.1fµs server CPU per request",
		round+1, c.impl, conn, rate, client*1e6, server*1e6)
	return p.add(fmt.Sprintf("PeerAttribution/side=client/load=equal/impl=%s/conn=%s", c.impl, conn), d.Requests,
		benchfmt.Value{Value: d.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: client, Unit: "cpu-sec/req"},
		benchfmt.Value{Value: server, Unit: "server-cpu-sec/req"}, benchfmt.Value{Value: d.Latency.P99, Unit: "p99-sec"})
}

// checkAttribution fails a cell that did not count what it should: a
// response or connection left unresolved now and then (a sender
// preempted past the wait) is counted, not a failure; more than one in a
// thousand is.
func checkAttribution(c attributionCell, d *rundoc.Doc) error {
	a := d.Attribution
	if limit := d.Requests / 1000; a.Counts != c.counts || a.AcceptsUntraced != c.untraced || a.Unresolved > limit || a.UnresolvedResponses > limit {
		return fmt.Errorf("attribution %s: counted %q (accepts untraced: %v) with %d connections and %d responses unresolved, want %q (%v) and at most %d",
			c.impl, a.Counts, a.AcceptsUntraced, a.Unresolved, a.UnresolvedResponses, c.counts, c.untraced, limit)
	}
	return nil
}
