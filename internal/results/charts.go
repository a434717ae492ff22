package results

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/perf/benchproc"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// A ChartFile is one rendered chart.
type ChartFile struct {
	Title string
	Name  string // file name under charts/
	Data  []byte
}

// Charts draws what the table's section asks for, in format "svg" or "png".
func (t *Table) Charts(format string) ([]ChartFile, error) {
	var out []ChartFile
	for _, c := range t.Section.Charts {
		rows, err := t.rowsMatching(c.Filter)
		if err != nil {
			return nil, err
		}
		var plots []titled
		switch c.Kind {
		case Share:
			for _, row := range rows {
				if p := t.shareChart(row); p != nil {
					plots = append(plots, titled{p, "Per-worker share, " + rowLabel(row), "share-" + fileKey(rowLabel(row))})
				}
			}
		case Spectrum:
			for _, row := range rows {
				if p := t.spectrumChart(row); p != nil {
					plots = append(plots, titled{p, "Latency by percentile, " + rowLabel(row), "latency-" + fileKey(rowLabel(row))})
				}
			}
		case Scaling:
			plots = t.scalingCharts(rows, c)
		case Bars:
			for _, row := range rows {
				if p := t.barChart(row, c); p != nil {
					plots = append(plots, titled{p, c.Label + ", " + rowLabel(row), fileKey(c.Unit) + "-" + fileKey(rowLabel(row))})
				}
			}
		}
		for _, p := range plots {
			w, h := 7*vg.Inch, 3.5*vg.Inch
			wt, err := p.p.WriterTo(w, h, format)
			if err != nil {
				return nil, err
			}
			var buf bytes.Buffer
			if _, err := wt.WriteTo(&buf); err != nil {
				return nil, err
			}
			name := strings.ToLower(fileKey(t.Section.Title)) + "-" + p.file + "." + format
			out = append(out, ChartFile{Title: p.title, Name: name, Data: buf.Bytes()})
		}
	}
	return out, nil
}

type titled struct {
	p           *plot.Plot
	title, file string
}

// rowsMatching lists the table's rows whose records pass a benchproc
// filter ("" passes all).
func (t *Table) rowsMatching(filter string) ([]benchproc.Key, error) {
	if filter == "" {
		return t.Rows, nil
	}
	var out []benchproc.Key
	for _, row := range t.Rows {
		if ok, err := keyMatches(row, filter); err != nil {
			return nil, err
		} else if ok {
			out = append(out, row)
		}
	}
	return out, nil
}

// keyMatches evaluates a filter of "/key:value" terms against a row key.
func keyMatches(k benchproc.Key, filter string) (bool, error) {
	for term := range strings.FieldsSeq(filter) {
		name, want, ok := strings.Cut(strings.TrimPrefix(term, "/"), ":")
		if !ok {
			return false, fmt.Errorf("chart filter %q: want /key:value terms", filter)
		}
		if keyValue(k, name) != want {
			return false, nil
		}
	}
	return true, nil
}

// keyValue is the value of the field named name ("workers") in k.
func keyValue(k benchproc.Key, name string) string {
	for _, f := range k.Projection().FlattenedFields() {
		if strings.TrimPrefix(f.Name, "/") == name {
			return k.Get(f)
		}
	}
	return ""
}

// rowLabel renders a key as "workers=2 conn=close".
func rowLabel(k benchproc.Key) string {
	var parts []string
	for _, f := range k.Projection().FlattenedFields() {
		if v := k.Get(f); v != "" {
			parts = append(parts, strings.TrimPrefix(f.Name, "/")+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

// colLabel renders a column key by its values ("reuseport").
func colLabel(k benchproc.Key) string {
	if s := k.StringValues(); s != "" {
		return s
	}
	return "(all)"
}

func fileKey(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

func legendStyle(p *plot.Plot, top, left bool) {
	p.Legend.Top, p.Legend.Left = top, left
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(-6), vg.Points(-4)
	if left {
		p.Legend.XOffs = vg.Points(6)
	}
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Title.TextStyle.Font.Size = vg.Points(12)
}

// shareChart: for each column, the share of connections (connection per
// request) or requests (keep-alive) of each worker, ranked busiest first
// and averaged over the samples. Workers that served nothing count.
func (t *Table) shareChart(row benchproc.Key) *plot.Plot {
	workers, _ := strconv.Atoi(keyValue(row, "workers"))
	if workers < 2 {
		return nil
	}
	// With a new connection per request, each connection is one request:
	// the spread of connections is what the accept model decided.
	what := "requests"
	for _, docs := range t.Docs[row] {
		for _, d := range docs {
			switch {
			case d.UDP != nil:
				what = "datagrams"
			case d.Mode == "close":
				what = "connections"
			}
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Share of %s per worker, busiest first (%%; even = %.1f%%)", what, 100/float64(workers))
	p.Y.Label.Text = "% of " + what
	p.X.Label.Text = "worker rank"
	width := vg.Points(min(40, 300/float64(len(t.Cols)*workers)))
	drawn := 0
	for i, col := range t.Cols {
		docs := t.Docs[row][col]
		if len(docs) == 0 {
			continue
		}
		shares := make(plotter.Values, workers)
		for _, d := range docs {
			var xs []float64
			var total float64
			for _, pc := range d.Units() {
				x := float64(pc.Requests)
				if what == "connections" {
					x = float64(pc.Connections)
				}
				xs = append(xs, x)
				total += x
			}
			for len(xs) < workers {
				xs = append(xs, 0)
			}
			slices.Sort(xs)
			slices.Reverse(xs)
			for r := range min(workers, len(xs)) {
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
		bars.Color = seriesColor(i)
		bars.Offset = width * vg.Length(float64(i)-float64(len(t.Cols)-1)/2)
		p.Add(bars)
		p.Legend.Add(colLabel(col), bars)
		drawn++
	}
	if drawn == 0 {
		return nil
	}
	var ranks []string
	for r := range workers {
		ranks = append(ranks, strconv.Itoa(r+1))
	}
	p.NominalX(ranks...)
	even := plotter.NewFunction(func(float64) float64 { return 100 / float64(workers) })
	even.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	even.Color = color.Gray{Y: 100}
	p.Add(even)
	legendStyle(p, true, false)
	p.Y.Min = 0
	// Room above the tallest bar for the legend, a line per column.
	p.Y.Max = math.Max(p.Y.Max, 100/float64(workers)) * (1.15 + 0.12*float64(drawn))
	return p
}

// percentileTicks label 1/(1-q) with the percentile q.
var percentileTicks = plot.ConstantTicks([]plot.Tick{
	{Value: 1, Label: "0%"}, {Value: 2, Label: "50%"}, {Value: 10, Label: "90%"}, {Value: 100, Label: "99%"},
	{Value: 1000, Label: "99.9%"}, {Value: 10000, Label: "99.99%"}, {Value: 100000, Label: "99.999%"},
})

// spectrumChart: latency against percentile, HdrHistogram's percentile
// spectrum: x is 1/(1-q) on a log scale, so p99, p99.9 and p99.99 lie
// far apart; a line per column, the quantile-wise median over samples.
func (t *Table) spectrumChart(row benchproc.Key) *plot.Plot {
	p := plot.New()
	p.Title.Text = "Latency by percentile (ms, log scale)"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = percentileTicks
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	drawn := 0
	for i, col := range t.Cols {
		docs := t.Docs[row][col]
		if len(docs) == 0 || len(docs[0].LatencyCDF) == 0 {
			continue
		}
		var pts plotter.XYs
		for qi, pt := range docs[0].LatencyCDF {
			if pt.Quantile >= 1 {
				continue // the maximum: at infinity on this axis
			}
			var vals []float64
			for _, d := range docs {
				if qi < len(d.LatencyCDF) {
					vals = append(vals, d.LatencyCDF[qi].Seconds)
				}
			}
			if v := Median(vals); v > 0 {
				pts = append(pts, plotter.XY{X: 1 / (1 - pt.Quantile), Y: v * 1e3})
			}
		}
		if len(pts) < 2 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		l.Color = seriesColor(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(colLabel(col), l)
		drawn++
	}
	if drawn == 0 {
		return nil
	}
	p.Add(plotter.NewGrid())
	legendStyle(p, true, true)
	p.Y.Max *= math.Pow(2, 1+0.4*float64(drawn)) // room for the legend
	p.X.Max *= 2                                 // room for the last tick's label
	return p
}

// scalingCharts: the median of c.Unit against the numeric row key c.X,
// a line per column, one chart per value of the other row keys.
func (t *Table) scalingCharts(rows []benchproc.Key, c Chart) []titled {
	type series struct {
		label string
		pts   map[string]plotter.XYs // column -> points
	}
	var groups []string
	by := map[string]*series{}
	for _, row := range rows {
		x, err := strconv.ParseFloat(keyValue(row, c.X), 64)
		if err != nil {
			continue
		}
		var rest []string
		for _, part := range strings.Fields(rowLabel(row)) {
			if !strings.HasPrefix(part, c.X+"=") {
				rest = append(rest, part)
			}
		}
		g := strings.Join(rest, " ")
		if by[g] == nil {
			groups = append(groups, g)
			by[g] = &series{label: g, pts: map[string]plotter.XYs{}}
		}
		for _, col := range t.Cols {
			if v := t.Values[cellKey{row, col, c.Unit}]; len(v) > 0 {
				by[g].pts[colLabel(col)] = append(by[g].pts[colLabel(col)], plotter.XY{X: x, Y: Median(v)})
			}
		}
	}
	var out []titled
	for _, g := range groups {
		s := by[g]
		p := plot.New()
		p.Title.Text = strings.TrimSuffix(c.Label+" against "+c.X+", "+g, ", ")
		p.X.Label.Text = c.X
		p.Y.Label.Text = c.Label
		var xs []float64
		drawn := 0
		for i, col := range t.Cols {
			pts := s.pts[colLabel(col)]
			if len(pts) < 2 {
				continue
			}
			slices.SortFunc(pts, func(a, b plotter.XY) int { return int(math.Copysign(1, a.X-b.X)) })
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				continue
			}
			l.Color, sc.Color = seriesColor(i), seriesColor(i)
			sc.Shape = plotutil.Shape(i)
			l.Dashes = plotutil.Dashes(i)
			p.Add(l, sc)
			p.Legend.Add(colLabel(col), l, sc)
			for _, pt := range pts {
				if !slices.Contains(xs, pt.X) {
					xs = append(xs, pt.X)
				}
			}
			drawn++
		}
		if drawn == 0 {
			continue
		}
		var ticks []plot.Tick
		for _, x := range xs {
			ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min = 0
		p.Y.Max *= 1.1 + 0.09*float64(drawn)
		p.Add(plotter.NewGrid())
		legendStyle(p, true, true)
		out = append(out, titled{p, p.Title.Text, strings.TrimSuffix(fileKey(c.Unit)+"-vs-"+c.X+"-"+fileKey(g), "-")})
	}
	return out
}

// barChart: the median of c.Unit per column on one row.
func (t *Table) barChart(row benchproc.Key, c Chart) *plot.Plot {
	var vals plotter.Values
	var labels []string
	for _, col := range t.Cols {
		v := t.Values[cellKey{row, col, c.Unit}]
		if len(v) == 0 {
			continue
		}
		m := Median(v)
		if m < 1e-6 {
			m = 0 // the 1e-9 that stands for zero in benchmark files
		}
		vals = append(vals, m)
		labels = append(labels, colLabel(col))
	}
	if len(vals) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = c.Label + " (median)"
	p.Y.Label.Text = c.Label
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil
	}
	bars.Color = seriesColor(0)
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(labels...)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	p.Y.Min = 0
	if p.Y.Max < 1e-6 {
		p.Y.Max = 1
	}
	p.Title.TextStyle.Font.Size = vg.Points(12)
	return p
}

// moreColors follow plotutil's seven, so that up to sixteen columns (the
// servers scenario has fifteen) never share a color.
var moreColors = []color.Color{
	color.RGBA{0x17, 0xbe, 0xcf, 0xff}, // teal
	color.RGBA{0xbc, 0xbd, 0x22, 0xff}, // olive
	color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, // gray
	color.RGBA{0x8c, 0x56, 0x4b, 0xff}, // brown
	color.RGBA{0x00, 0x00, 0x80, 0xff}, // navy
	color.RGBA{0x00, 0x00, 0x00, 0xff}, // black
	color.RGBA{0x00, 0x64, 0x00, 0xff}, // dark green
	color.RGBA{0xff, 0xc8, 0x00, 0xff}, // gold
	color.RGBA{0x80, 0x00, 0x00, 0xff}, // maroon
}

// seriesColor is column i's color.
func seriesColor(i int) color.Color {
	if n := len(plotutil.DefaultColors); i >= n && i < n+len(moreColors) {
		return moreColors[i-n]
	}
	return plotutil.Color(i)
}
