package metrics

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/lbbench/lbbench/internal/nativehist"
)

// TestCountsHistogramMatchesClientGolang: the histogram built from counts
// encodes the same classic and native buckets as client_golang's own
// histogram fed the same observations.
func TestCountsHistogramMatchesClientGolang(t *testing.T) {
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ref_seconds", Help: "ref", Buckets: nativehist.ClassicBounds,
		NativeHistogramBucketFactor: 1.1, NativeHistogramZeroThreshold: nativehist.ZeroThreshold,
	})
	var c nativehist.Counts
	for i := range 5000 {
		v := 3e-6 * math.Pow(1.0037, float64(i)) // 3 µs to ~2.7 min: spans gaps and the top
		if i%97 == 0 {
			v = 1e-7 // zero bucket
		}
		if v > 60 {
			continue
		}
		ref.Observe(v)
		c.Observe(v)
	}
	var want, got dto.Metric
	ref.Write(&want)
	desc := prometheus.NewDesc("x_seconds", "x", nil, nil)
	NewCountsHistogram(desc, &c, time.Now()).Write(&got)
	w, g := want.Histogram, got.Histogram
	if g.GetSampleCount() != w.GetSampleCount() || math.Abs(g.GetSampleSum()-w.GetSampleSum()) > 1e-6 {
		t.Fatalf("count/sum %d/%v, want %d/%v", g.GetSampleCount(), g.GetSampleSum(), w.GetSampleCount(), w.GetSampleSum())
	}
	for i := range w.Bucket {
		if g.Bucket[i].GetCumulativeCount() != w.Bucket[i].GetCumulativeCount() {
			t.Errorf("classic le=%v: %d, want %d", w.Bucket[i].GetUpperBound(), g.Bucket[i].GetCumulativeCount(), w.Bucket[i].GetCumulativeCount())
		}
	}
	if g.GetSchema() != w.GetSchema() || g.GetZeroCount() != w.GetZeroCount() {
		t.Fatalf("schema %d zero %d, want %d %d", g.GetSchema(), g.GetZeroCount(), w.GetSchema(), w.GetZeroCount())
	}
	if expand(g) == nil || !equalMaps(expand(g), expand(w)) {
		t.Fatalf("native buckets differ:\n got %v\nwant %v", expand(g), expand(w))
	}
}

// expand decodes spans and deltas into key -> count.
func expand(h *dto.Histogram) map[int]int64 {
	out := map[int]int64{}
	key, i := 0, 0
	var count int64
	for si, sp := range h.PositiveSpan {
		if si == 0 {
			key = int(sp.GetOffset())
		} else {
			key += int(sp.GetOffset())
		}
		for range sp.GetLength() {
			count += h.PositiveDelta[i]
			out[key] = count
			key++
			i++
		}
	}
	return out
}

func equalMaps(a, b map[int]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestLoadgenMetricsLint(t *testing.T) {
	l := NewLoadgen("http://127.0.0.1:1/", "close", 0, []string{"refused", "reset"})
	l.Observe(0.001)
	l.AddSecond(map[uint64]int64{42: 10}, map[uint64]int64{42: 3}, map[string]int64{"reset": 1})
	problems, err := testutil.GatherAndLint(l.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.ToFloat64(l.requests.WithLabelValues("42")); n != 10 {
		t.Errorf("requests %v", n)
	}
}
