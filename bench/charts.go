package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/lbbench/lbbench/internal/atomicfile"
)

type chart struct{ title, file string }

// writeCharts draws, for the matrix: per-worker share per model (bars),
// latency CDF per model, throughput and imbalance against worker count;
// for every other scenario, p99 and imbalance per model.
func writeCharts(dir string, s *sampleSet, groups []string, byGroup map[string][]string) ([]chart, error) {
	var out []chart
	add := func(p *plot.Plot, title, file string, w, h vg.Length) error {
		var buf bytes.Buffer
		wt, err := p.WriterTo(w, h, "svg")
		if err != nil {
			return err
		}
		if _, err := wt.WriteTo(&buf); err != nil {
			return err
		}
		out = append(out, chart{title, file})
		return atomicfile.WriteBytes(filepath.Join(dir, "charts", file), buf.Bytes())
	}

	// The matrix group at the most workers up to the CPU count is the one
	// whose shares and CDFs are drawn; scaling charts use all groups.
	for _, g := range groups {
		names := byGroup[g]
		k := parseName(names[0])
		if p := shareChart(s, names, k); p != nil {
			if err := add(p, "Per-worker share, "+g, "share-"+fileKey(g)+".svg", 7*vg.Inch, 3.5*vg.Inch); err != nil {
				return nil, err
			}
		}
		if p := cdfChart(s, names, g); p != nil {
			if err := add(p, "Latency CDF, "+g, "cdf-"+fileKey(g)+".svg", 7*vg.Inch, 3.5*vg.Inch); err != nil {
				return nil, err
			}
		}
	}
	if p := churnChart(s, groups, byGroup); p != nil {
		if err := add(p, "Failed requests per restart, by restart strategy", "churn-failures.svg", 8*vg.Inch, 3.5*vg.Inch); err != nil {
			return nil, err
		}
	}
	for _, conn := range []string{"close", "keepalive"} {
		unit := "req-imbalance"
		if conn == "close" {
			unit = "conn-imbalance"
		}
		for _, m := range []struct{ unit, label, file string }{
			{"req/s", "requests per second", "throughput"},
			{unit, unit + " (max/mean)", "imbalance"},
		} {
			if p := scalingChart(s, "Accept", conn, m.unit, m.label); p != nil {
				if err := add(p, fmt.Sprintf("%s against worker count, conn=%s", m.label, conn), m.file+"-"+conn+".svg", 6*vg.Inch, 3.5*vg.Inch); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

func fileKey(g string) string {
	b := []byte(g)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// shareChart: for each model, the share of connections (conn=close) or
// requests (keepalive) of each worker, workers ranked busiest first and
// averaged over the samples.
func shareChart(s *sampleSet, names []string, k cellKey) *plot.Plot {
	if k.workers < 2 {
		return nil
	}
	p := plot.New()
	what := "requests"
	if k.conn == "close" {
		what = "connections"
	}
	p.Title.Text = fmt.Sprintf("Share of %s per worker (busiest first; even = %.1f%%)", what, 100/float64(k.workers))
	p.Y.Label.Text = "% of " + what
	p.X.Label.Text = "worker rank"
	width := vg.Points(min(40, 300/float64(len(names)*k.workers)))
	drawn := 0
	for i, n := range names {
		docs := s.docs[n]
		if len(docs) == 0 {
			continue
		}
		shares := make(plotter.Values, k.workers)
		for _, d := range docs {
			var xs []float64
			var total float64
			for _, pc := range d.PerPID {
				x := float64(pc.Requests)
				if k.conn == "close" {
					x = float64(pc.Connections)
				}
				xs = append(xs, x)
				total += x
			}
			for len(xs) < k.workers {
				xs = append(xs, 0)
			}
			slices.Sort(xs)
			slices.Reverse(xs)
			for r := range min(k.workers, len(xs)) {
				if total > 0 {
					shares[r] += 100 * xs[r] / total / float64(len(docs))
				}
			}
		}
		bars, err := plotter.NewBarChart(shares, width)
		if err != nil {
			continue
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = width * vg.Length(float64(i)-float64(len(names)-1)/2)
		p.Add(bars)
		p.Legend.Add(parseName(n).model, bars)
		drawn++
	}
	if drawn == 0 {
		return nil
	}
	var ranks []string
	for r := range k.workers {
		ranks = append(ranks, strconv.Itoa(r+1))
	}
	p.NominalX(ranks...)
	even := plotter.NewFunction(func(float64) float64 { return 100 / float64(k.workers) })
	even.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	even.Color = color.Gray{Y: 100}
	p.Add(even)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Y.Min = 0
	p.Y.Max = math.Max(p.Y.Max*1.45, 100/float64(k.workers)*1.45) // room for the legend
	return p
}

// cdfChart: latency distribution per model, the quantile-wise median over
// the samples, on a log latency axis.
func cdfChart(s *sampleSet, names []string, g string) *plot.Plot {
	p := plot.New()
	p.Title.Text = "Latency CDF (" + g + ")"
	p.X.Label.Text = "latency (s, log scale)"
	p.Y.Label.Text = "fraction of requests"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	drawn := 0
	for i, n := range names {
		docs := s.docs[n]
		if len(docs) == 0 || len(docs[0].LatencyCDF) == 0 {
			continue
		}
		var pts plotter.XYs
		for qi, pt := range docs[0].LatencyCDF {
			var vals []float64
			for _, d := range docs {
				if qi < len(d.LatencyCDF) {
					vals = append(vals, d.LatencyCDF[qi].Seconds)
				}
			}
			v := median(vals)
			if v <= 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: v, Y: pt.Quantile})
		}
		if len(pts) < 2 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(parseName(n).model, l)
		drawn++
	}
	if drawn == 0 {
		return nil
	}
	p.Legend.Left = true
	p.Legend.Top = true
	p.Legend.XOffs = vg.Points(10)
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	return p
}

// scalingChart: the median of unit against worker count, a line per model.
func scalingChart(s *sampleSet, prefix, conn, unit, label string) *plot.Plot {
	series := map[string]plotter.XYs{}
	var models []string
	for _, n := range s.names {
		k := parseName(n)
		if k.prefix != prefix || k.conn != conn || len(s.vals[n][unit]) == 0 {
			continue
		}
		if series[k.model] == nil {
			models = append(models, k.model)
		}
		series[k.model] = append(series[k.model], plotter.XY{X: float64(k.workers), Y: median(s.vals[n][unit])})
	}
	if len(models) == 0 || len(series[models[0]]) < 2 {
		return nil
	}
	p := plot.New()
	p.Title.Text = label + ", conn=" + conn
	p.X.Label.Text = "workers"
	p.Y.Label.Text = label
	var xs []float64
	for i, m := range models {
		pts := series[m]
		slices.SortFunc(pts, func(a, b plotter.XY) int { return int(math.Copysign(1, a.X-b.X)) })
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			continue
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l, sc)
		p.Legend.Add(m, l, sc)
		for _, pt := range pts {
			if !slices.Contains(xs, pt.X) {
				xs = append(xs, pt.X)
			}
		}
	}
	var ticks []plot.Tick
	for _, x := range xs {
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.Itoa(int(x))})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	p.Legend.Left = true
	p.Legend.Top = false
	p.Legend.XOffs = vg.Points(10)
	p.Legend.YOffs = vg.Points(10)
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	return p
}

// churnChart: failed requests per restart and resets per 1M connections,
// a bar per strategy (medians).
func churnChart(s *sampleSet, groups []string, byGroup map[string][]string) *plot.Plot {
	for _, g := range groups {
		names := byGroup[g]
		if parseName(names[0]).prefix != "Churn" {
			continue
		}
		p := plot.New()
		p.Title.Text = "Failed requests per rolling restart (median)"
		p.Y.Label.Text = "failed requests / restart"
		var vals plotter.Values
		var labels []string
		for _, n := range names {
			v := median(s.vals[n]["failed/restart"])
			if v < 1e-6 {
				v = 0
			}
			vals = append(vals, v)
			labels = append(labels, parseName(n).model)
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(40))
		if err != nil {
			return nil
		}
		bars.Color = plotutil.Color(0)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.NominalX(labels...)
		p.X.Tick.Label.Font.Size = vg.Points(8)
		p.Y.Min = 0
		if p.Y.Max < 0.01 {
			p.Y.Max = 1
		}
		return p
	}
	return nil
}
