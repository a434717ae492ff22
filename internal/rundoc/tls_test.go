package rundoc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
)

// tlsRun is run's document for an https:// run whose handshakes took
// hs (ns), the first full and the rest resumed, with one timeout.
func tlsRun(t *testing.T, hs []int64, resume bool, start time.Time) *Doc {
	t.Helper()
	d := run(t, []int64{1e6}, map[uint64]int64{1: 1}, start)
	r := result(map[uint64]int64{1: 1})
	r.Start = start
	r.Options.URL = "https://127.0.0.1:8443/"
	r.Options.TLS = load.TLSOptions{Enabled: true, Resume: resume}
	r.TLS = load.NewTLSStats()
	for i, v := range hs {
		r.TLS.Handshake.RecordValue(v)
		if i == 0 || !resume {
			r.TLS.Full++
		} else {
			r.TLS.Resumed++
		}
	}
	r.TLS.Failures[load.TLSTimeout] = 1
	r.Latency, r.Series = load.NewHistogram(), nil
	r.Latency.RecordValue(1e6)
	b, err := json.Marshal(Build("Loadgen/conn=close", r, kernel.Observation{}, kernel.Host{}, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.Series = d.Series
	return &back
}

// TestMergeTLS: handshake counts add up, the handshake histogram merges
// whole, and runs that shook hands otherwise are refused.
func TestMergeTLS(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	a := tlsRun(t, []int64{1e6, 2e6, 3e6}, true, start)
	b := tlsRun(t, []int64{4e6, 5e6}, true, start.Add(time.Millisecond))
	if a.TLSHandshake == nil || a.TLSHandshake.Count != 3 || a.Histograms[tlsHistogram] == "" {
		t.Fatalf("document lacks its handshakes: %+v", a.TLSHandshake)
	}
	m, err := Merge("x", []*Doc{a, b}, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if m.TLS == nil || m.TLS.Full != 2 || m.TLS.Resumed != 3 || m.TLS.Failures[load.TLSTimeout] != 2 || !m.TLS.Resume {
		t.Errorf("merged tls %+v", m.TLS)
	}
	if q := m.TLSHandshake; q == nil || q.Count != 5 || q.Max < 0.0049 {
		t.Errorf("merged handshake quantiles %+v, want 5 values up to 5ms", q)
	}
	var sb strings.Builder
	Summary(&sb, m)
	if !strings.Contains(sb.String(), "2 full, 3 resumed handshakes, 2 failed (timeout 2)") {
		t.Errorf("summary:\n%s", sb.String())
	}

	plain := run(t, []int64{1e6}, map[uint64]int64{1: 1}, start.Add(time.Millisecond))
	plain.URL = a.URL
	for _, c := range []struct {
		b    *Doc
		want string
	}{
		{plain, "one run is https"},
		{tlsRun(t, []int64{1e6}, false, start.Add(time.Millisecond)), "other TLS settings (full handshakes, not resumed sessions)"},
	} {
		if _, err := Merge("x", []*Doc{a, c.b}, []string{"a.json", "b.json"}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}
