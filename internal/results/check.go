package results

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/perf/benchproc"

	"github.com/lbbench/lbbench/internal/rundoc"
)

// Check reads the records of a results folder and says what makes it
// unfit to compare: a benchmark and unit with fewer than minSamples
// samples, a wanted model missing from the /model keys, a latency unit
// that is not in seconds. It reads the records, never printed tables.
func Check(s *Set, minSamples int, models []string) []string {
	var problems []string
	type nu struct{ name, unit string }
	count := map[nu]int{}
	var order []nu
	var pp benchproc.ProjectionParser
	modelProj, err := pp.Parse("/model", nil)
	if err != nil {
		return []string{err.Error()}
	}
	seen := map[string]bool{}
	for _, r := range s.Records {
		if m := modelProj.Project(r).StringValues(); m != "" {
			seen[m] = true
		}
		for _, v := range r.Values {
			if v.Unit == rundoc.BoundUnit {
				continue // a mark on some samples, not a figure every sample has
			}
			k := nu{string(r.Name), v.Unit}
			if count[k] == 0 {
				order = append(order, k)
			}
			count[k]++
		}
	}
	if len(s.Records) == 0 {
		return []string{"no samples"}
	}
	var short []string
	for _, k := range order {
		if count[k] < minSamples {
			short = append(short, fmt.Sprintf("%s %s: %d", k.name, k.unit, count[k]))
		}
	}
	if len(short) > 0 {
		problems = append(problems, fmt.Sprintf("fewer than %d samples: %s", minSamples, strings.Join(short, ", ")))
	}
	for _, m := range models {
		if !seen[m] {
			have := make([]string, 0, len(seen))
			for k := range seen {
				have = append(have, k)
			}
			slices.Sort(have)
			problems = append(problems, fmt.Sprintf("model %s has no samples (models: %s)", m, strings.Join(have, ", ")))
		}
	}
	units := map[string]bool{}
	for _, k := range order {
		units[k.unit] = true
	}
	for u := range units {
		if strings.HasSuffix(u, "ms") || strings.HasSuffix(u, "us") || strings.Contains(u, "ns/") || strings.HasSuffix(u, "sec/op") {
			problems = append(problems, fmt.Sprintf("unit %s: latencies go in seconds (-sec)", u))
		}
	}
	// Load samples carry their latency; the binding and remap cases
	// measure outcomes, not requests, and have none.
	if units["req/s"] && !units["p99-sec"] {
		problems = append(problems, "no latency in seconds (p99-sec)")
	}
	slices.Sort(problems)
	return problems
}
