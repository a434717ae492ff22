package results

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sample sections, as a scenario would declare them.
var testSections = []Section{
	{
		Name: "Accept", Filter: "/conn:close", Title: "New connection per request", About: "About the matrix.",
		Rows: "/workers@num",
		Metrics: []Metric{
			{Unit: "req/s", Label: "throughput", Summary: true},
			{Unit: "p99-sec", Label: "p99", Summary: true},
			{Unit: "conn-imbalance", Label: "imbalance", Summary: true},
		},
		Charts: []Chart{{Kind: Share}, {Kind: Spectrum}, {Kind: Scaling, Unit: "req/s", Label: "throughput", X: "workers"}},
	},
	{
		Name: "Churn", Title: "Restarts", About: "About churn.", Rows: "/workers@num",
		Metrics: []Metric{{Unit: "failed/restart", Label: "failed per restart", Summary: true}},
		Kernel:  []string{"TcpEstabResets"},
		Charts:  []Chart{{Kind: Bars, Unit: "failed/restart", Label: "failed per restart"}},
	},
	{Name: "Nothing", Title: "A scenario that did not run", Rows: "/workers"},
}

// TestReportGolden: a slice of a real results folder renders to the
// committed REPORT.md, byte for byte (go test -update rewrites it).
func TestReportGolden(t *testing.T) {
	s, err := Read("testdata/small")
	if err != nil {
		t.Fatal(err)
	}
	md, charts, err := Report(s, testSections)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "small.REPORT.md")
	if *update {
		os.WriteFile(golden, md, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, want) {
		t.Errorf("REPORT.md differs from %s (go test -update to accept):\n%s", golden, diffLines(string(want), string(md)))
	}
	var names []string
	for _, c := range charts {
		names = append(names, c.Name)
		if !bytes.HasPrefix(c.Data, []byte("<?xml")) {
			t.Errorf("%s is not SVG", c.Name)
		}
	}
	for _, want := range []string{
		"new-connection-per-request-share-workers-2.svg", "new-connection-per-request-latency-workers-1.svg",
		"new-connection-per-request-req-s-vs-workers.svg", "restarts-failed-restart-workers-2.svg",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("chart %s not drawn (drawn: %v)", want, names)
		}
	}
	if strings.Contains(string(md), "A scenario that did not run") {
		t.Error("a section without records was rendered")
	}
}

// diffLines shows the first lines that differ.
func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n- " + x + "\n+ " + y
		}
	}
	return ""
}

// TestJudging: the winner, the ties and the lines left out follow the
// samples, with the test benchstat uses.
func TestJudging(t *testing.T) {
	s := &Set{Higher: map[string]bool{"req/s": true, "conn-imbalance": false}}
	raw := "Unit req/s better=higher\nUnit conn-imbalance better=lower\n"
	add := func(model, workers string, rate, imb []float64) {
		for i := range rate {
			raw += "BenchmarkA/model=" + model + "/workers=" + workers + " 1 " + ftoa(rate[i]) + " req/s " + ftoa(imb[i]) + " conn-imbalance\n"
		}
	}
	ones := []float64{1, 1, 1, 1, 1, 1}
	add("fast", "1", []float64{200, 210, 205, 199, 201, 207}, ones)
	add("slow", "1", []float64{100, 101, 99, 102, 98, 100}, ones)
	add("twin", "1", []float64{204, 199, 211, 203, 206, 200}, ones)
	add("fast", "2", []float64{200, 210, 205, 199, 201, 207}, []float64{1.2, 1.3, 1.25, 1.2, 1.22, 1.28})
	add("slow", "2", []float64{100, 101, 99, 102, 98, 100}, []float64{1.0, 1.01, 1.0, 1.02, 1.0, 1.01})
	add("twin", "2", []float64{90, 95, 92, 91, 93, 94}, []float64{1.5, 1.6, 1.55, 1.5, 1.52, 1.58})
	if err := s.readRecords([]byte(raw), "test"); err != nil {
		t.Fatal(err)
	}
	tb, err := s.Table(&Section{Name: "A", Rows: "/workers@num", Metrics: []Metric{{Unit: "req/s", Summary: true}, {Unit: "conn-imbalance", Summary: true}}})
	if err != nil {
		t.Fatal(err)
	}
	// Imbalance with one worker cannot differ: that line is left out.
	if len(tb.Lines) != 3 {
		t.Fatalf("%d lines, want 3 (req/s twice, imbalance once)", len(tb.Lines))
	}
	l := tb.Lines[0] // workers=1 req/s
	if colLabel(tb.Cols[l.Best()]) == "slow" || !(l.Cells[0].Best || l.Cells[2].Best) {
		t.Errorf("workers=1 best is %s", colLabel(tb.Cols[l.Best()]))
	}
	if tie := l.Cells[0].Tie || l.Cells[2].Tie; !tie {
		t.Error("fast and twin are not significantly different, yet no tie")
	}
	if l.Cells[1].Tie || l.Cells[1].Best {
		t.Error("slow is tied or best")
	}
	imb := tb.Lines[2]
	if imb.Metric.Unit != "conn-imbalance" || colLabel(tb.Cols[imb.Best()]) != "slow" {
		t.Errorf("lower-is-better imbalance: best %s", colLabel(tb.Cols[imb.Best()]))
	}
	sum := tb.summary()
	if !strings.Contains(sum, "**fast**") || !strings.Contains(sum, "tied: twin") || !strings.Contains(sum, "**slow**") {
		t.Errorf("summary %q", sum)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// TestCheck: the check reads records and catches what it must.
func TestCheck(t *testing.T) {
	s := &Set{Higher: map[string]bool{}}
	s.readRecords([]byte("BenchmarkA/model=a 1 100 req/s 0.001 p99-sec\nBenchmarkA/model=b 1 90 req/s 2 p99-ms\n"), "x")
	p := strings.Join(Check(s, 6, []string{"a", "b", "c"}), "\n")
	for _, want := range []string{"fewer than 6 samples", "model c has no samples", "unit p99-ms"} {
		if !strings.Contains(p, want) {
			t.Errorf("check does not say %q:\n%s", want, p)
		}
	}
	s2, err := Read("testdata/small")
	if err != nil {
		t.Fatal(err)
	}
	if p := Check(s2, 6, []string{"reuseport", "single", "shared-netpoll"}); len(p) != 0 {
		t.Errorf("a sound folder fails the check: %v", p)
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{17020, "req/s", "17.02k"}, {0.008395, "p99-sec", "8.395ms"}, {1.006, "conn-imbalance", "1.006"},
		{1e-9, "failed/restart", "0"}, {388.926, "resets/1M-conn", "389"}, {12.25, "", "12.2"}, {0, "", "0"}, {2, "", "2"}, {2.5, "", "2.5"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %s) = %s, want %s", c.v, c.unit, got, c.want)
		}
	}
}
