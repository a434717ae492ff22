package load

import (
	"math"
	"net/netip"
	"testing"
	"time"
)

func TestConstantSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := NewSchedule(start, 1000, false, 1, start.Add(time.Second), 0)
	n := 0
	var prev time.Time
	for {
		at, ok := s.Next()
		if !ok {
			break
		}
		if n > 0 {
			if gap := at.Sub(prev); gap < 999*time.Microsecond || gap > 1001*time.Microsecond {
				t.Fatalf("gap %v at %d", gap, n)
			}
		}
		prev = at
		n++
	}
	if n != 1000 {
		t.Fatalf("%d arrivals in 1 s at 1000/s", n)
	}
}

func TestPoissonSchedule(t *testing.T) {
	start := time.Unix(0, 0)
	s := NewSchedule(start, 5000, true, 42, start.Add(20*time.Second), 0)
	var gaps []float64
	prev := start
	for {
		at, ok := s.Next()
		if !ok {
			break
		}
		gaps = append(gaps, at.Sub(prev).Seconds())
		prev = at
	}
	// 100000 arrivals expected; a Poisson count has sd sqrt(n) ~ 316.
	if n := len(gaps); math.Abs(float64(n)-100000) > 5*316 {
		t.Fatalf("%d arrivals, want about 100000", n)
	}
	// Exponential gaps: sd equals the mean.
	var sum, sq float64
	for _, g := range gaps {
		sum += g
		sq += g * g
	}
	mean := sum / float64(len(gaps))
	sd := math.Sqrt(sq/float64(len(gaps)) - mean*mean)
	if math.Abs(sd/mean-1) > 0.02 {
		t.Fatalf("gap sd/mean %v, want 1 for exponential gaps", sd/mean)
	}
}

func TestScheduleLimit(t *testing.T) {
	s := NewSchedule(time.Now(), 1e6, false, 1, time.Time{}, 10)
	n := 0
	for _, ok := s.Next(); ok; _, ok = s.Next() {
		n++
	}
	if n != 10 {
		t.Fatalf("%d arrivals, limit 10", n)
	}
}

// TestShardMerge: the merged histogram of several shards is the histogram
// of all their samples.
func TestShardMerge(t *testing.T) {
	shards := []*shard{newShard(), newShard(), newShard()}
	all := NewHistogram()
	for i := range 30000 {
		d := time.Duration(1000+i*i%7919) * time.Microsecond
		shards[i%3].record(&sample{latency: d, uncorrected: d, ttfb: d, pid: uint64(100 + i%4), newConn: i%10 == 0})
		all.RecordValue(int64(d))
	}
	e := &engine{}
	var r Result
	e.collect(&r, shards)
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if got, want := r.Latency.ValueAtQuantile(q), all.ValueAtQuantile(q); got != want {
			t.Errorf("p%v: merged %d, direct %d", q, got, want)
		}
	}
	if r.Requests != 30000 || r.Connections != 3000 || len(r.PerPID) != 4 || r.PerPID[101].Requests != 7500 {
		t.Errorf("counts: %d requests, %d conns, %v", r.Requests, r.Connections, r.PerPID)
	}
}

func TestParseSrc(t *testing.T) {
	got, err := ParseSrc("127.0.0.2-127.0.0.4,127.0.1.1")
	if err != nil || len(got) != 4 || got[0] != netip.MustParseAddr("127.0.0.2") || got[3] != netip.MustParseAddr("127.0.1.1") {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "x", "127.0.0.5-127.0.0.1", "127.0.0.1-::1", "10.0.0.0-10.2.0.0"} {
		if _, err := ParseSrc(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
