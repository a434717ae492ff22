package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/binding"
	"github.com/lbbench/lbbench/internal/results"
)

// bindingCase is one claim of the binding scenario and how it is
// measured.
type bindingCase struct {
	name    string
	measure func(p Params) (binding.Figure, error)
}

// bindingCount is how many connections or datagrams a sample sends.
const bindingCount = 600

var bindingCases = []bindingCase{
	{"other-uid-join", func(Params) (binding.Figure, error) {
		uid, err := binding.NobodyUID()
		if err != nil {
			return binding.Figure{}, fmt.Errorf("%w: no user nobody: %v", binding.ErrSkipped, err)
		}
		return binding.OtherUID(uid)
	}},
	{"same-user-stray", func(p Params) (binding.Figure, error) { return binding.Stray(p.CPUs, bindingCount) }},
	{"reuseaddr-rebind-timewait", func(Params) (binding.Figure, error) { return binding.ReuseAddrRebind() }},
	{"reuseaddr-second-listener", func(Params) (binding.Figure, error) { return binding.ReuseAddrSecondListener() }},
	{"specific-wins-tcp", func(Params) (binding.Figure, error) { return binding.WildcardSpecific(false, bindingCount/10) }},
	{"specific-wins-udp", func(Params) (binding.Figure, error) { return binding.WildcardSpecific(true, bindingCount/10) }},
	{"ipv6-dualstack-beside-ipv4", func(Params) (binding.Figure, error) { return binding.DualStack(false) }},
	{"ipv6-v6only-beside-ipv4", func(Params) (binding.Figure, error) { return binding.DualStack(true) }},
	{"udp-unicast-group", func(p Params) (binding.Figure, error) { return binding.Unicast(p.CPUs, bindingCount) }},
	{"udp-multicast-group", func(p Params) (binding.Figure, error) { return binding.Multicast(p.CPUs, bindingCount) }},
	{"udp-broadcast-group", func(p Params) (binding.Figure, error) { return binding.Broadcast(p.CPUs, bindingCount) }},
}

// bindingUnits are the binding figures, one column each in the report.
var bindingUnits = []string{"bind-refused", "rebind-ok", "ipv4-bind-ok", "specific-wins", "stray-share", "copies/datagram"}

// measureBinding runs every claim Count times. A case that cannot run
// here says why once and records nothing: a skipped claim is not a pass.
func measureBinding(p Params, res *resultsFile) error {
	skipped := map[string]bool{}
	for round := range p.Count {
		for _, c := range bindingCases {
			if skipped[c.name] {
				continue
			}
			f, err := c.measure(p)
			if errors.Is(err, binding.ErrSkipped) {
				fmt.Fprintf(os.Stderr, "binding %s: %v\n", c.name, err)
				skipped[c.name] = true
				continue
			}
			if err != nil {
				return fmt.Errorf("case %s: %w", c.name, err)
			}
			if round == 0 {
				fmt.Fprintf(os.Stderr, "binding %s: %s\n", c.name, f.Note)
			}
			err = res.add(&benchfmt.Result{Config: fileConfig(), Name: benchfmt.Name("Binding/case=" + c.name), Iters: 1,
				Values: []benchfmt.Value{{Value: f.Value, Unit: f.Unit}, {Value: f.Expect, Unit: "claimed-" + f.Unit}}}, "")
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// bindingMetrics are the report's columns: each figure and its claim.
func bindingMetrics() []results.Metric {
	var out []results.Metric
	for _, u := range bindingUnits {
		out = append(out, results.Metric{Unit: u, Label: u, Keep: true}, results.Metric{Unit: "claimed-" + u, Label: "claimed", Keep: true})
	}
	return out
}
