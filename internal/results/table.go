package results

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
	"golang.org/x/perf/benchproc"

	"github.com/lbbench/lbbench/internal/rundoc"
)

// A Table is one section's figures, grouped by benchproc projections:
// rows (e.g. workers and connection mode) by columns (models), a line
// per row and metric.
type Table struct {
	Section *Section
	Rows    []benchproc.Key
	Cols    []benchproc.Key
	Lines   []*Line
	// Docs are the samples' loadgen documents by row and column.
	Docs map[benchproc.Key]map[benchproc.Key][]*rundoc.Doc
	// Values are every sample by row, column and unit.
	Values map[cellKey][]float64
	// Bound counts, by row and column, the samples loadgen's self-check
	// says loadgen limited (rundoc.BoundUnit), and Samples every sample.
	Bound, Samples map[rowCol]int
}

type rowCol struct{ row, col benchproc.Key }

type cellKey struct {
	row, col benchproc.Key
	unit     string
}

// A Line is one metric on one row, judged.
type Line struct {
	Row    benchproc.Key
	Metric Metric
	Higher bool
	Cells  []*Cell // by column; nil where the column has no samples
}

// A Cell is the samples of one column on one line.
type Cell struct {
	Values  []float64
	Sample  *benchmath.Sample
	Summary benchmath.Summary
	// Best marks the best median of the line; Tie a column not
	// significantly different from it (Mann-Whitney U at alpha 0.05,
	// the test benchstat uses), with P its p-value.
	Best, Tie bool
	P         float64
	// Cmp is the comparison with the best column; its warnings say when
	// the samples are too few for any difference to be significant.
	Cmp benchmath.Comparison
}

// Confidence of the intervals shown, as benchstat's.
const confidence = 0.95

// Table groups the records of one section and judges every line.
func (s *Set) Table(sec *Section) (*Table, error) {
	filter, err := benchproc.NewFilter(strings.TrimSpace(".name:" + strconv.Quote(sec.Name) + " " + sec.Filter))
	if err != nil {
		return nil, err
	}
	var pp benchproc.ProjectionParser
	rowProj, err := pp.Parse(sec.Rows, filter)
	if err != nil {
		return nil, fmt.Errorf("section %s rows %q: %w", sec.Name, sec.Rows, err)
	}
	cols := cmp.Or(sec.Cols, "/model")
	colProj, err := pp.Parse(cols, filter)
	if err != nil {
		return nil, fmt.Errorf("section %s columns %q: %w", sec.Name, cols, err)
	}
	mfilters := make([]*benchproc.Filter, len(sec.Metrics))
	for i, m := range sec.Metrics {
		if m.Filter == "" {
			continue
		}
		if mfilters[i], err = benchproc.NewFilter(m.Filter); err != nil {
			return nil, fmt.Errorf("section %s metric %s filter %q: %w", sec.Name, m.Unit, m.Filter, err)
		}
	}
	t := &Table{Section: sec, Docs: map[benchproc.Key]map[benchproc.Key][]*rundoc.Doc{}, Values: map[cellKey][]float64{},
		Bound: map[rowCol]int{}, Samples: map[rowCol]int{}}
	seenRow, seenCol, seenName := map[benchproc.Key]bool{}, map[benchproc.Key]bool{}, map[string]bool{}
	// metricRows notes the rows each filtered metric applies to.
	metricRows := make([]map[benchproc.Key]bool, len(sec.Metrics))
	for i := range metricRows {
		metricRows[i] = map[benchproc.Key]bool{}
	}
	for _, rec := range s.Records {
		if m, err := filter.Match(rec); err != nil || !m.Any() {
			continue
		}
		row, col := rowProj.Project(rec), colProj.Project(rec)
		if !seenRow[row] {
			seenRow[row] = true
			t.Rows = append(t.Rows, row)
		}
		if !seenCol[col] {
			seenCol[col] = true
			t.Cols = append(t.Cols, col)
		}
		t.Samples[rowCol{row, col}]++
		if _, ok := rec.Value(rundoc.BoundUnit); ok {
			t.Bound[rowCol{row, col}]++
		}
		for i, m := range sec.Metrics {
			if f := mfilters[i]; f != nil {
				if mt, err := f.Match(rec); err != nil || !mt.Any() {
					continue
				}
			}
			metricRows[i][row] = true
			if v, ok := rec.Value(m.Unit); ok {
				k := cellKey{row, col, m.Unit}
				t.Values[k] = append(t.Values[k], v)
			}
		}
		if name := string(rec.Name); !seenName[name] {
			seenName[name] = true
			if t.Docs[row] == nil {
				t.Docs[row] = map[benchproc.Key][]*rundoc.Doc{}
			}
			t.Docs[row][col] = append(t.Docs[row][col], s.Docs[name]...)
		}
	}
	benchproc.SortKeys(t.Rows)
	// Columns keep their first-seen order: the scenario's own order,
	// with its base first, as benchstat's.
	for _, row := range t.Rows {
		for i, m := range sec.Metrics {
			if !metricRows[i][row] {
				continue
			}
			if l := t.line(row, m, s.Higher[m.Unit]); l != nil {
				t.Lines = append(t.Lines, l)
			}
		}
	}
	return t, nil
}

// line judges one metric on one row. It returns nil when there is
// nothing to compare: no samples, or every sample of every column the
// same value (imbalance with one worker, no failures anywhere).
func (t *Table) line(row benchproc.Key, m Metric, higher bool) *Line {
	l := &Line{Row: row, Metric: m, Higher: higher, Cells: make([]*Cell, len(t.Cols))}
	var all []float64
	for i, col := range t.Cols {
		v := t.Values[cellKey{row, col, m.Unit}]
		if len(v) == 0 {
			continue
		}
		smp := benchmath.NewSample(v, &benchmath.DefaultThresholds)
		l.Cells[i] = &Cell{Values: v, Sample: smp, Summary: benchmath.AssumeNothing.Summary(smp, confidence)}
		all = append(all, v...)
	}
	if len(all) == 0 || (!t.Section.MetricsAsColumns && !m.Keep && slices.Min(all) == slices.Max(all)) {
		return nil
	}
	if t.Section.MetricsAsColumns || slices.Min(all) == slices.Max(all) {
		return l // nothing to rank: a kept line of equal values
	}
	best := -1
	for i, c := range l.Cells {
		if c == nil {
			continue
		}
		if best < 0 || better(c.Summary.Center, l.Cells[best].Summary.Center, higher) {
			best = i
		}
	}
	b := l.Cells[best]
	b.Best = true
	for _, c := range l.Cells {
		if c == nil || c == b {
			continue
		}
		cmp := benchmath.AssumeNothing.Compare(b.Sample, c.Sample)
		c.P, c.Tie, c.Cmp = cmp.P, cmp.P > cmp.Alpha, cmp
	}
	return l
}

func better(a, b float64, higher bool) bool {
	if higher {
		return a > b
	}
	return a < b
}

// Best returns the index of the line's best column.
func (l *Line) Best() int {
	return slices.IndexFunc(l.Cells, func(c *Cell) bool { return c != nil && c.Best })
}

// Margin is how much better the best column's median is than column i's,
// as a fraction (0.16: 16% more throughput, or 16% less latency).
func (l *Line) Margin(i int) float64 {
	b, c := l.Cells[l.Best()].Summary.Center, l.Cells[i].Summary.Center
	if l.Higher {
		if c == 0 {
			return 0
		}
		return b/c - 1
	}
	if c == 0 {
		return 0
	}
	return 1 - b/c
}

// Median is the median of a cell's samples.
func (c *Cell) Median() float64 { return c.Summary.Center }

// KernelDelta is the median over a row and column's samples of a
// kernel counter's change.
func (t *Table) KernelDelta(row, col benchproc.Key, counter string) (float64, bool) {
	docs := t.Docs[row][col]
	if len(docs) == 0 {
		return 0, false
	}
	var xs []float64
	for _, d := range docs {
		xs = append(xs, float64(d.Kernel.Delta[counter]))
	}
	return Median(xs), true
}

// Median is the middle of xs (the mean of the two middle values of an
// even count; 0 for none), the figure the report and the peers summary
// print.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// recordsOf is a helper for tests and checks: the records of one name.
func recordsOf(s *Set, name string) []*benchfmt.Result {
	var out []*benchfmt.Result
	for _, r := range s.Records {
		if string(r.Name) == name {
			out = append(out, r)
		}
	}
	return out
}
