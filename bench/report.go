package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/report"
)

// sampleSet is every sample of one results folder, by benchmark name.
type sampleSet struct {
	names []string                        // in first-seen order
	vals  map[string]map[string][]float64 // name -> unit -> samples
	docs  map[string][]*report.Doc        // name -> loadgen documents
}

// cellKey splits a benchmark name like
// Accept/model=reuseport/workers=2/conn=close.
type cellKey struct {
	prefix, model, conn string
	workers             int
}

func parseName(name string) cellKey {
	parts := strings.Split(name, "/")
	k := cellKey{prefix: parts[0]}
	for _, p := range parts[1:] {
		key, val, _ := strings.Cut(p, "=")
		switch key {
		case "model":
			k.model = val
		case "conn":
			k.conn = val
		case "workers":
			k.workers, _ = strconv.Atoi(val)
		}
	}
	return k
}

func (k cellKey) group() string {
	return fmt.Sprintf("%s/workers=%d/conn=%s", k.prefix, k.workers, k.conn)
}

func loadSamples(dir string) (*sampleSet, error) {
	f, err := os.Open(filepath.Join(dir, "raw.txt"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &sampleSet{vals: map[string]map[string][]float64{}, docs: map[string][]*report.Doc{}}
	r := benchfmt.NewReader(f, "raw.txt")
	for r.Scan() {
		res, ok := r.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		name := string(res.Name)
		if s.vals[name] == nil {
			s.names = append(s.names, name)
			s.vals[name] = map[string][]float64{}
		}
		for _, v := range res.Values {
			s.vals[name][v.Unit] = append(s.vals[name][v.Unit], v.Value)
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "json", "*.json"))
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			return nil, err
		}
		var d report.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		s.docs[d.Name] = append(s.docs[d.Name], &d)
	}
	return s, nil
}

// metric is one figure the verdict judges.
type metric struct {
	unit, label string
	higher      bool
}

func verdictMetrics(prefix, conn string) []metric {
	if prefix == "Churn" {
		return []metric{{"failed/restart", "failed requests per restart", false}, {"resets/1M-conn", "resets per million connections", false},
			{"p99-restart-sec", "p99 latency in seconds with a restart", false}}
	}
	imb := metric{"req-imbalance", "request imbalance (max/mean)", false}
	if conn == "close" {
		imb = metric{"conn-imbalance", "connection imbalance (max/mean)", false}
	}
	return []metric{{"req/s", "throughput", true}, {"p99-sec", "p99 latency", false}, imb}
}

var thresholds = &benchmath.DefaultThresholds

// judgement is one metric of one group: the best model and how sure.
type judgement struct {
	group, metric string
	best          string
	bestMedian    float64
	lines         []string
	winsClearly   bool
}

// judge compares the models of one group on one metric with the same test
// benchstat uses (Mann-Whitney U, alpha 0.05, medians).
func judge(s *sampleSet, group string, names []string, m metric) *judgement {
	type cand struct {
		model  string
		sample *benchmath.Sample
		median float64
	}
	var cs []cand
	for _, n := range names {
		v := s.vals[n][m.unit]
		if len(v) == 0 {
			continue
		}
		smp := benchmath.NewSample(v, thresholds)
		cs = append(cs, cand{parseName(n).model, smp, benchmath.AssumeNothing.Summary(smp, 0.95).Center})
	}
	if len(cs) < 2 {
		return nil
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		if m.higher {
			return cmp.Compare(b.median, a.median)
		}
		return cmp.Compare(a.median, b.median)
	})
	j := &judgement{group: group, metric: m.label, best: cs[0].model, bestMedian: cs[0].median, winsClearly: true}
	for _, c := range cs[1:] {
		cmpr := benchmath.AssumeNothing.Compare(cs[0].sample, c.sample)
		diff := "n/a"
		if c.median != 0 {
			diff = fmt.Sprintf("%+.1f%%", 100*(cs[0].median/c.median-1))
		}
		if cmpr.P <= cmpr.Alpha {
			j.lines = append(j.lines, fmt.Sprintf("%s vs %s: %s (p=%.3f, n=%d+%d)", j.best, c.model, diff, cmpr.P, cmpr.N1, cmpr.N2))
		} else {
			j.winsClearly = false
			j.lines = append(j.lines, fmt.Sprintf("%s vs %s: %s, **not significant** (p=%.3f, n=%d+%d)", j.best, c.model, diff, cmpr.P, cmpr.N1, cmpr.N2))
		}
	}
	return j
}

// writeReport writes REPORT.md and charts/ for a results folder.
func writeReport(dir string) error {
	s, err := loadSamples(dir)
	if err != nil {
		return err
	}
	if len(s.names) == 0 {
		return fmt.Errorf("%s: no samples", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	env, _ := os.ReadFile(filepath.Join(dir, "env.txt"))
	fmt.Fprintf(&b, "# lbbench report\n\nWhich accept model spreads connections best on this machine, and how sure are we?\n")
	fmt.Fprintf(&b, "Each figure is the median of the samples of a cell; differences are judged with the same test benchstat uses\n")
	fmt.Fprintf(&b, "(Mann-Whitney U, alpha = 0.05). Raw samples: `raw.txt`; tables: `benchstat.txt` (models side by side), `benchstat-workers.txt` (by worker count).\n\n")
	fmt.Fprintf(&b, "```\n%s```\n\n", env)

	groups, byGroup := groupNames(s)
	b.WriteString("## Verdict\n\n")
	wins := map[string]int{}
	clear := 0
	var js []*judgement
	for _, g := range groups {
		k := parseName(byGroup[g][0])
		for _, m := range verdictMetrics(k.prefix, k.conn) {
			if j := judge(s, g, byGroup[g], m); j != nil {
				js = append(js, j)
				if j.winsClearly {
					wins[j.best]++
					clear++
				}
			}
		}
	}
	if len(js) == 0 {
		b.WriteString("Only one model measured: nothing to compare.\n\n")
	} else {
		var ranking []string
		for m := range wins {
			ranking = append(ranking, m)
		}
		slices.SortFunc(ranking, func(a, c string) int { return cmp.Compare(wins[c], wins[a]) })
		if len(ranking) > 0 {
			fmt.Fprintf(&b, "Of %d comparisons (%d groups x throughput, p99, imbalance), %d have a winner significantly ahead of every other model:", len(js), len(groups), clear)
			for _, m := range ranking {
				fmt.Fprintf(&b, " **%s** %d,", m, wins[m])
			}
			b.WriteString(" the rest are not significant against at least one model.\n\n")
		} else {
			fmt.Fprintf(&b, "None of the %d comparisons has a model significantly ahead of all others.\n\n", len(js))
		}
		for _, j := range js {
			fmt.Fprintf(&b, "- `%s` %s: best **%s** (%s). %s\n", j.group, j.metric, j.best, fmtMetric(j.metric, j.bestMedian), strings.Join(j.lines, "; "))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Charts\n\n")
	charts, err := writeCharts(dir, s, groups, byGroup)
	if err != nil {
		return err
	}
	for _, c := range charts {
		fmt.Fprintf(&b, "### %s\n\n![%s](charts/%s)\n\n", c.title, c.title, c.file)
	}

	writeChurnAndRemap(&b, s, groups, byGroup)

	b.WriteString("## Medians\n\n| cell | req/s | p50 | p99 | conn imbalance | req imbalance | Jain | locality | samples |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range groups {
		for _, n := range byGroup[g] {
			v := s.vals[n]
			if len(v["req/s"]) == 0 {
				continue // not a load run (remap)
			}
			fmt.Fprintf(&b, "| `%s` | %.0f | %s | %s | %.3f | %.3f | %.4f | %.2f | %d |\n", n, med(v["req/s"]),
				fmtSec(med(v["p50-sec"])), fmtSec(med(v["p99-sec"])), med(v["conn-imbalance"]), med(v["req-imbalance"]), med(v["jain"]),
				med(v["locality"]), len(v["req/s"]))
		}
	}
	b.WriteString("\n## How to read this\n\n" +
		"- **imbalance** is max/mean of the per-worker counts (1 = perfectly even; 2 = the busiest worker got twice its share). " +
		"With `conn=close` every request is a new connection, so connection imbalance is what the kernel's (or the dispatcher's) choice did; " +
		"with `conn=keepalive` the 50 connections are spread once and request imbalance follows from that.\n" +
		"- **Jain** is (sum x)^2 / (n sum x^2): 1 when even, 1/n when one worker takes everything.\n" +
		"- **locality** is the share of connections a worker handled on the CPU their packets arrived on (SO_INCOMING_CPU against getcpu). On loopback a packet arrives on the CPU of the process that sent it, so locality measures how well steering follows the client's CPU; a client that migrates between CPUs caps it below 1.\n" +
		"- **p99** in the open-loop scenario is measured from each request's intended send time (no coordinated omission).\n" +
		"- On a machine with fewer than 4 CPUs the load generator shares CPUs with the target, so absolute rates are the pair's, not the server's; compare models, not numbers across machines.\n" +
		"- Compare your own run with this one: `make compare OLD=<this folder> NEW=<yours>`.\n")
	return atomicfile.WriteBytes(filepath.Join(dir, "REPORT.md"), []byte(b.String()))
}

// writeChurnAndRemap adds the restart-strategy table and the hash-remap
// table when those scenarios ran.
func writeChurnAndRemap(b *strings.Builder, s *sampleSet, groups []string, byGroup map[string][]string) {
	for _, g := range groups {
		k := parseName(byGroup[g][0])
		switch k.prefix {
		case "Churn":
			fmt.Fprintf(b, "## Restart strategies under load (`%s`)\n\n", g)
			b.WriteString("Rolling restarts every 100ms while loadgen opens 3000 connections per second; medians over the samples.\n\n")
			b.WriteString("| strategy | restarts per sample | failed requests per restart | resets per 1M connections | p99 (seconds with a restart) | TCPMigrateReqSuccess | TCPMigrateReqFailure | ListenDrops |\n|---|---|---|---|---|---|---|---|\n")
			for _, n := range byGroup[g] {
				v := s.vals[n]
				restarts := math.NaN()
				if docs := s.docs[n]; len(docs) > 0 {
					var cs []float64
					for _, d := range docs {
						if d.Restarts != nil {
							cs = append(cs, float64(d.Restarts.Count))
						}
					}
					restarts = med(cs)
				}
				fmt.Fprintf(b, "| %s | %.0f | %s | %s | %s | %.0f | %.0f | %.0f |\n", parseName(n).model, restarts, tiny(med(v["failed/restart"]), 3),
					tiny(med(v["resets/1M-conn"]), 0), fmtSec(med(v["p99-restart-sec"])),
					kernelDelta(s.docs[n], "TCPMigrateReqSuccess"), kernelDelta(s.docs[n], "TCPMigrateReqFailure"), kernelDelta(s.docs[n], "ListenDrops"))
			}
			b.WriteString("\n")
		case "Remap":
			if parseName(byGroup[g][0]).workers != 1 {
				continue
			}
			b.WriteString("## Hash remapping when a listener joins\n\n")
			b.WriteString("Fraction of 2000 fixed client 4-tuples that land on a different socket when a reuseport group grows from N to N+1 listeners (median over the samples), " +
				"against modulo hashing (1 - 1/(N+1)) and the kernel's reciprocal_scale (index = hash * N >> 32), which always moves about half.\n\n")
			b.WriteString("| N -> N+1 | measured | reciprocal_scale | modulo |\n|---|---|---|---|\n")
			for _, g2 := range groups {
				n := byGroup[g2][0]
				k2 := parseName(n)
				if k2.prefix != "Remap" {
					continue
				}
				v := s.vals[n]
				fmt.Fprintf(b, "| %d -> %d | %.3f | %.3f | %.3f |\n", k2.workers, k2.workers+1, med(v["moved-fraction"]), med(v["scale-fraction"]), med(v["modulo-fraction"]))
			}
			b.WriteString("\n")
		}
	}
}

// kernelDelta is the median over samples of a TcpExt counter's change.
func kernelDelta(docs []*report.Doc, key string) float64 {
	var xs []float64
	for _, d := range docs {
		xs = append(xs, float64(d.Kernel.Delta[key]))
	}
	return med(xs)
}

// tiny prints the 1e-9 placeholder for zero as 0.
func tiny(v float64, prec int) string {
	if v < 1e-6 {
		return "0"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func fmtMetric(label string, v float64) string {
	switch {
	case strings.Contains(label, "latency"):
		return fmtSec(v)
	case strings.Contains(label, "throughput"):
		return fmt.Sprintf("%.0f req/s", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// groupNames groups benchmark names by everything but the model, in
// first-seen order.
func groupNames(s *sampleSet) ([]string, map[string][]string) {
	var groups []string
	by := map[string][]string{}
	for _, n := range s.names {
		g := parseName(n).group()
		if by[g] == nil {
			groups = append(groups, g)
		}
		by[g] = append(by[g], n)
	}
	return groups, by
}

func med(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return median(xs)
}

// cmdReport rewrites benchstat tables and REPORT.md of a results folder.
func cmdReport(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return usageErr("want one results folder")
	}
	if err := summarize(args[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(args[0], "REPORT.md"))
	return nil
}

// cmdCompare runs benchstat between two results folders.
func cmdCompare(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) != 2 {
		return usageErr("want OLD and NEW results folders")
	}
	var in []string
	for i, d := range args {
		raw := filepath.Join(d, "raw.txt")
		if _, err := os.Stat(raw); err != nil {
			return fmt.Errorf("%s: no raw.txt (not a results folder?)", d)
		}
		in = append(in, []string{"old", "new"}[i]+"="+raw)
	}
	return runBenchstatTo(stdout, append([]string{"-col", ".file", "-row", ".fullname", "-ignore", "kernel,cpu,go,cpu-count,net.ipv4.tcp_migrate_req"}, in...)...)
}
