package rundoc

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
)

func result(reqs map[uint64]int64) *load.Result {
	r := &load.Result{
		Options: load.Options{URL: "http://127.0.0.1:1/", Mode: load.ModeClose, Conns: 4},
		Start:   time.Unix(1000, 0), Duration: 2 * time.Second,
		Errors: map[string]int64{"reset": 3}, PerPID: map[uint64]*load.PIDCount{},
		Latency: load.NewHistogram(), Uncorrected: load.NewHistogram(), Connect: load.NewHistogram(),
		TTFB: load.NewHistogram(), Lag: load.NewHistogram(),
	}
	for pid, n := range reqs {
		r.PerPID[pid] = &load.PIDCount{Requests: n, Connections: n}
		r.Requests += n
		r.Connections += n
		for range n {
			r.Latency.RecordValue(int64(2 * time.Millisecond))
		}
	}
	return r
}

func TestBuild(t *testing.T) {
	r := result(map[uint64]int64{101: 300, 102: 100})
	r.Unattributed = load.PIDCount{Requests: 50, Connections: 50}
	r.BadPIDValues, r.BadPIDExample = 50, "abc"
	d := Build("Loadgen/conn=close", r, kernel.Observation{}, kernel.Host{}, 4, 1)
	if d.Requests != 400 || d.Errors != 3 || d.RequestsPerSec != 200 {
		t.Errorf("requests %d errors %d rate %v", d.Requests, d.Errors, d.RequestsPerSec)
	}
	// Four workers, two silent: they count as zeros; unattributed do not count.
	f := d.Fairness.Requests
	if f.Workers != 4 || f.Total != 400 || f.MaxOverMean != 3 || f.MinOverMean != 0 {
		t.Errorf("fairness %+v", f)
	}
	if d.Unattributed == nil || d.Unattributed.InvalidValues != 50 || d.Unattributed.Example != "abc" {
		t.Errorf("unattributed %+v", d.Unattributed)
	}
	if len(d.Problems) != 0 {
		t.Errorf("problems %v in a sound run", d.Problems)
	}
	var out bytes.Buffer
	Summary(&out, d)
	for _, want := range []string{"400 ok, 3 errors (reset 3)", "2 worker(s) served nothing", "Unattributed 50 requests", `(e.g. "abc")`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestProblems: no successful response, a request unanswered far longer
// than any answer, and nothing measured are failures.
func TestProblems(t *testing.T) {
	d := Build("x", result(nil), kernel.Observation{}, kernel.Host{}, 0, 1)
	if len(d.Problems) != 1 || d.Problems[0] != "no successful response" {
		t.Errorf("problems %q", d.Problems)
	}
	r := result(map[uint64]int64{7: 10})
	r.InFlightAtEnd, r.OldestInFlight = 2, 1500*time.Millisecond
	d = Build("x", r, kernel.Observation{}, kernel.Host{}, 0, 1)
	if len(d.Problems) != 1 || !strings.Contains(d.Problems[0], "2 request(s) still unanswered") {
		t.Errorf("problems %q", d.Problems)
	}
	r.OldestInFlight = 5 * time.Millisecond // as long as an answer takes: normal
	if d = Build("x", r, kernel.Observation{}, kernel.Host{}, 0, 1); len(d.Problems) != 0 {
		t.Errorf("problems %q for requests cut a moment after they left", d.Problems)
	}
	r = result(nil)
	r.Interrupted, r.Duration = true, 0
	if d = Build("x", r, kernel.Observation{}, kernel.Host{}, 0, 1); len(d.Problems) != 1 || !strings.Contains(d.Problems[0], "nothing measured") {
		t.Errorf("problems %q", d.Problems)
	}
}

// TestWriteBench: the file benchstat reads: units declared, the name as
// given, zeros that would break a geomean written as 1e-9.
func TestWriteBench(t *testing.T) {
	d := Build("x", result(map[uint64]int64{101: 10, 102: 10}), kernel.Observation{}, kernel.Host{CPUModel: "cpu x", Kernel: "6.0"}, 2, 1)
	d.Restarts = &Restarts{Count: 3}
	var out bytes.Buffer
	if err := WriteBench(&out, d, "Accept/model=reuseport/workers=2/conn=close"); err != nil {
		t.Fatal(err)
	}
	r := benchfmt.NewReader(&out, "x")
	units, results := 0, 0
	for r.Scan() {
		switch rec := r.Result().(type) {
		case *benchfmt.UnitMetadata:
			units++
		case *benchfmt.Result:
			results++
			if string(rec.Name) != "Accept/model=reuseport/workers=2/conn=close" || rec.Iters != 20 {
				t.Errorf("name %s iters %d", rec.Name, rec.Iters)
			}
			if v, ok := rec.Value("req/s"); !ok || v != 10 {
				t.Errorf("req/s %v", v)
			}
			if v, _ := rec.Value("failed/restart"); v != 1e-9 {
				t.Errorf("failed/restart %v, want the 1e-9 that stands for 0", v)
			}
			if v, _ := rec.Value("conn-imbalance"); v != 1 {
				t.Errorf("conn-imbalance %v", v)
			}
			if got := rec.GetConfig("cpu"); got != "cpu x" {
				t.Errorf("cpu config %q", got)
			}
		case *benchfmt.SyntaxError:
			t.Errorf("syntax error: %v", rec)
		}
	}
	if results != 1 || units < 10 {
		t.Errorf("%d results, %d unit lines", results, units)
	}
}
