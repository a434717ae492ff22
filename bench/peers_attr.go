package main

import (
	"context"
	"fmt"
	"slices"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/results"
)

// What kernel attribution costs the client: loadgen against the target
// at its maximum, counting by the target's header, by the kernel's
// accepts only (the serving hook named away, as on a kernel without it),
// by who served each response (both programs, as -attribute kernel
// does) and by who served alone (-acceptors=false), in turn.

// attributionCells are the ways of attributing compared, the first the
// base.
var attributionCells = []struct {
	impl   string
	env    []string
	extra  []string
	counts string // what the run must say it counted
}{
	{"header", nil, nil, ""},
	{"kernel-accepts", []string{"LBBENCH_KATTR_SERVE_HOOK=lbbench_none"}, []string{"-attribute", "kernel"}, load.CountsAccepts},
	{"kernel-served", nil, []string{"-attribute", "kernel"}, load.CountsServed},
	{"kernel-served-only", nil, []string{"-attribute", "kernel", "-acceptors=false"}, load.CountsServed},
}

var peerAttributionSection = results.Section{
	Name: "PeerAttribution", Filter: "/side:client", Title: "What kernel attribution costs", Cols: "/impl", Rows: "/conn",
	About: "loadgen against the target (reuseport) at its maximum, attributing each response by the target's X-Worker-Pid header, " +
		"by the kernel's record of accepts only, by the thread the kernel saw send it (accepts and sends both traced) and by that thread alone (-acceptors=false: no program on every system call), in turn " +
		"within each round; client CPU is loadgen's in the measured part (loading the programs, ~0.15 s once per run, is left out). The BPF programs run on every system call's exit and every socket send of the host, so the server pays " +
		"too: the rate is the pair's.",
	Metrics: []results.Metric{
		{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "client CPU per request", Summary: true},
	},
}

// attributionCosts runs every attribution cell once per connection mode,
// in an order that rotates with the round.
func (p *peerRun) attributionCosts(ctx context.Context, target peerServer, round int) error {
	cells := slices.Clone(attributionCells)
	for range round % len(cells) {
		cells = append(cells[1:], cells[0])
	}
	url := "http://" + target.addr + "/"
	for _, conn := range []string{"keepalive", "close"} {
		for _, c := range cells {
			run, err := p.loadgenOn(ctx, p.budget.Clients, c.env, url, conn, 0, c.extra...)
			if err != nil {
				return err
			}
			// A response or connection left unresolved now and then (a
			// sender preempted past the wait) is counted, not a failure;
			// more than one in a thousand is.
			a := run.doc.Attribution
			if limit := run.doc.Requests / 1000; a.Counts != c.counts || a.Unresolved > limit || a.UnresolvedResponses > limit {
				return fmt.Errorf("attribution %s: counted %q with %d connections and %d responses unresolved, want %q and at most %d",
					c.impl, a.Counts, a.Unresolved, a.UnresolvedResponses, c.counts, limit)
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
	}
	return nil
}
