package results

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/perf/benchmath"
)

// steering is the bench's steering section as far as these tests need:
// rows by workers and conn mode, models as columns.
var steering = &Section{Name: "Steering", Title: "Steered reuseport", Rows: "/workers@num /conn",
	Metrics: []Metric{{Unit: "locality", Label: "locality", Summary: true}, {Unit: "req/s", Label: "throughput", Summary: true}}}

// TestTwoSamplesNameNoWinner: two samples per cell (a slice of a real
// netns steering run) cannot make any difference significant, so the
// summary names no model, while the table still bolds the best median.
func TestTwoSamplesNameNoWinner(t *testing.T) {
	s, err := Read("testdata/two")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := s.Table(steering)
	if err != nil {
		t.Fatal(err)
	}
	sum := tb.summary()
	if strings.Contains(sum, "**") || strings.Count(sum, "not decided: 2 samples each are too few") != 2 {
		t.Errorf("summary %q: want both figures not decided, no model named", sum)
	}
	for _, l := range tb.Lines {
		b := l.Best()
		for i, c := range l.Cells {
			if c != nil && better(c.Median(), l.Cells[b].Median(), l.Higher) {
				t.Errorf("%s %s: bold on %s but %s has the better median", rowLabel(l.Row), l.Metric.Unit, colLabel(tb.Cols[b]), colLabel(tb.Cols[i]))
			}
		}
	}
	var md bytes.Buffer
	tb.markdown(&md)
	if strings.Contains(md.String(), "Inf") || strings.Contains(md.String(), "∞") {
		t.Errorf("cells print an infinite interval:\n%s", md.String())
	}
}

// TestTieBrokenByMedian: where every column is as good on every line
// but one line is decided elsewhere, the column with the best medians
// wins, not the first column.
func TestTieBrokenByMedian(t *testing.T) {
	s := &Set{Higher: map[string]bool{"req/s": true}}
	raw := "Unit req/s better=higher\n"
	add := func(model, workers string, v ...float64) {
		for _, x := range v {
			raw += "BenchmarkA/model=" + model + "/workers=" + workers + " 1 " + ftoa(x) + " req/s\n"
		}
	}
	// workers=1: first and second tie, slow is worse; workers=2 the same,
	// with second's median higher both times.
	add("first", "1", 200, 210, 190, 205, 195, 200)
	add("second", "1", 203, 212, 192, 207, 198, 204)
	add("slow", "1", 100, 101, 99, 102, 98, 100)
	add("first", "2", 200, 210, 190, 205, 195, 200)
	add("second", "2", 204, 211, 193, 206, 199, 205)
	add("slow", "2", 100, 101, 99, 102, 98, 100)
	if err := s.readRecords([]byte(raw), "test"); err != nil {
		t.Fatal(err)
	}
	tb, err := s.Table(&Section{Name: "A", Rows: "/workers@num", Metrics: []Metric{{Unit: "req/s", Summary: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if sum := strings.TrimSpace(tb.summary()); !strings.HasPrefix(sum, "**second**") || !strings.Contains(sum, "tied: first") {
		t.Errorf("summary %q: want second (best medians), tied with first", sum)
	}
}

// TestOneSampleCells: with one sample a cell prints its value alone, not
// an interval of infinity.
func TestOneSampleCells(t *testing.T) {
	s, err := Read("testdata/one")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := s.Table(steering)
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	tb.markdown(&md)
	out := md.String()
	if strings.Contains(out, "Inf") || strings.Contains(out, "∞") || strings.Contains(out, "±") {
		t.Errorf("one-sample cells print an interval:\n%s", out)
	}
	if !strings.Contains(out, "| 1.000 |") && !strings.Contains(out, "**1.000**") {
		t.Errorf("no locality value of reuseport-cpu in:\n%s", out)
	}
	if sum := tb.summary(); strings.Contains(sum, "**") {
		t.Errorf("summary %q names a winner from one sample", sum)
	}
}

// TestZeroCellWithoutInterval: a median of 0 from too few samples for an
// interval prints "0", not "0 (≤+InfT)".
func TestZeroCellWithoutInterval(t *testing.T) {
	for _, v := range [][]float64{{0}, {0, 0.5}} {
		smp := benchmath.NewSample(v, &benchmath.DefaultThresholds)
		c := &Cell{Values: v, Sample: smp, Summary: benchmath.AssumeNothing.Summary(smp, confidence)}
		if got := formatCell(c, "failed/restart"); strings.ContainsAny(got, "≤±∞") || strings.Contains(got, "Inf") {
			t.Errorf("samples %v print %q", v, got)
		}
	}
}
