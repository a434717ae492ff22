package rundoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
)

// run builds the document of a run whose latencies are vals (ns) and
// whose per-pid requests are reqs, started at start, through JSON as
// loadgen writes it.
func run(t *testing.T, vals []int64, reqs map[uint64]int64, start time.Time) *Doc {
	t.Helper()
	r := result(reqs)
	r.Start = start
	r.Latency = load.NewHistogram()
	sec := load.NewHistogram()
	for _, v := range vals {
		r.Latency.RecordValue(v)
		sec.RecordValue(v)
	}
	enc, _ := sec.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	r.Series = []load.Second{{T: 1, At: start.Add(time.Second), Requests: int64(len(vals)), PerPID: map[uint64]int64{}, Hist: enc}}
	d := Build("Loadgen/conn=close", r, kernel.Observation{}, kernel.Host{}, 0, 1)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return &back
}

// TestMergeIsExact: merged percentiles are those of one histogram
// holding every value of every run, counts are sums, and the fairness
// figures come from the sums.
func TestMergeIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all := load.NewHistogram()
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	var docs []*Doc
	for g := range 3 {
		var vals []int64
		// Different shapes: the average of percentiles would be wrong.
		for range 1000 * (g + 1) {
			v := int64(50_000 + rng.ExpFloat64()*float64(100_000*(g*g+1)))
			vals = append(vals, v)
			all.RecordValue(v)
		}
		docs = append(docs, run(t, vals, map[uint64]int64{101: int64(400 * (g + 1)), 102: int64(600 * (g + 1))}, start.Add(time.Duration(g)*time.Millisecond)))
	}
	m, err := Merge("x", docs, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := quantiles(all)
	if m.Latency != want {
		t.Errorf("merged latency %+v, want %+v (one histogram of every value)", m.Latency, want)
	}
	if m.Requests != 6000 || m.PerPID["101"].Requests != 2400 || m.PerPID["102"].Requests != 3600 {
		t.Errorf("requests %d, per pid %+v %+v", m.Requests, m.PerPID["101"], m.PerPID["102"])
	}
	if m.Fairness.Requests.MaxOverMean != 1.2 {
		t.Errorf("max/mean %v, want 3600/3000 = 1.2", m.Fairness.Requests.MaxOverMean)
	}
	if len(m.Series) != 1 || m.Series[0].Requests != 6000 {
		t.Fatalf("series %+v, want one second of 6000", m.Series)
	}
	if got, wantP99 := m.Series[0].P99, float64(all.ValueAtQuantile(99))/1e9; got != wantP99 {
		t.Errorf("the second's p99 %v, want %v", got, wantP99)
	}
	if len(m.Inputs) != 3 || m.Inputs[2].File != "c" {
		t.Errorf("inputs %+v", m.Inputs)
	}
	if h, err := hdrhistogram.Decode([]byte(m.Histograms["latency"])); err != nil || h.TotalCount() != 6000 {
		t.Errorf("merged histogram: %v, %v", h, err)
	}
}

// TestMergeRefuses: runs that cannot be one result are refused, naming
// the file and why.
func TestMergeRefuses(t *testing.T) {
	start := time.Now()
	base := func() *Doc { return run(t, []int64{1e6}, map[uint64]int64{1: 1}, start) }
	cases := []struct {
		name string
		edit func(d *Doc)
		want string
	}{
		{"other target", func(d *Doc) { d.URL = "http://127.0.0.1:2/" }, "another target"},
		{"other mode", func(d *Doc) { d.Mode = "keepalive" }, "another connection mode"},
		{"other attribution", func(d *Doc) { d.Attribution.Mode = "kernel" }, "attributed otherwise"},
		{"accepts not traced", func(d *Doc) { d.Attribution.AcceptsUntraced = true }, "-acceptors"},
		{"old file", func(d *Doc) { d.Histograms = nil }, "no histograms"},
		{"other histogram", func(d *Doc) {
			h := hdrhistogram.New(1, 1e6, 2)
			h.RecordValue(5)
			b, _ := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
			d.Histograms["latency"] = string(b)
		}, "other settings"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := base()
			c.edit(b)
			_, err := Merge("x", []*Doc{base(), b}, []string{"a.json", "b.json"})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "b.json") {
				t.Errorf("error %v, want one naming b.json and saying %q", err, c.want)
			}
		})
	}
}

// TestMergeDuplicateByRunID: generators started together by -start-at
// may read the clock at the same nanosecond (it happened in CI): runs
// with their own ids merge however equal their starts; the same id
// twice, or a document without ids read twice, is refused.
func TestMergeDuplicateByRunID(t *testing.T) {
	start := time.Now()
	gen := func(id string) *Doc {
		d := run(t, []int64{1e6}, map[uint64]int64{1: 1}, start)
		d.Generator = &Generator{Run: id, Hostname: "h", Started: start}
		return d
	}
	files := []string{"a.json", "b.json"}
	if m, err := Merge("x", []*Doc{gen("A"), gen("B")}, files); err != nil || m.Requests != 2 {
		t.Errorf("two runs started at the same nanosecond: %v (requests %v), want them merged", err, m)
	}
	// A merge holds its inputs' runs: merging it with one of them again
	// would count that run twice.
	ab, err := Merge("x", []*Doc{gen("A"), gen("B")}, files)
	if err != nil {
		t.Fatal(err)
	}
	for name, docs := range map[string][]*Doc{"same id": {gen("A"), gen("A")}, "no ids": {gen(""), gen("")}, "a merge and one of its runs": {ab, gen("B")}} {
		if _, err := Merge("x", docs, files); !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), "b.json is the same run as a.json") {
			t.Errorf("%s: %v, want b.json refused as a.json's run", name, err)
		}
	}
}

// TestIntervalLog: HdrHistogram's own log reader reads the log back,
// one histogram per second, every value there.
func TestIntervalLog(t *testing.T) {
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	d := run(t, []int64{1e6, 2e6, 3e6}, map[uint64]int64{1: 3}, start)
	var buf bytes.Buffer
	if err := IntervalLog(&buf, d); err != nil {
		t.Fatal(err)
	}
	rd := hdrhistogram.NewHistogramLogReader(&buf)
	n, total := 0, int64(0)
	for {
		h, err := rd.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			break
		}
		n++
		total += h.TotalCount()
		if h.Max() < 3e6 {
			t.Errorf("max %d", h.Max())
		}
	}
	if n != 1 || total != 3 {
		t.Errorf("%d histograms, %d values; want 1 and 3\n%s", n, total, buf.String())
	}
}
