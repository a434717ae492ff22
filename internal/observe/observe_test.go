package observe

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestShippedConfigAndRulesPassPromtool(t *testing.T) {
	for _, args := range [][]string{
		{"check", "config", repoFile(t, "deploy/prometheus/prometheus.yml")},
		{"check", "rules", repoFile(t, "deploy/prometheus/rules.yml")},
	} {
		out, err := exec.Command("promtool", args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	if b, err := os.ReadFile(repoFile(t, "deploy/grafana/lbbench.json")); err != nil || !json.Valid(b) {
		t.Errorf("grafana dashboard missing or not JSON: %v", err)
	}
}

// waitFor polls a PromQL expression until check accepts its result.
func waitFor(t *testing.T, p *Prometheus, expr string, timeout time.Duration, check func([]Sample) bool) []Sample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []Sample
	var err error
	for time.Now().Before(deadline) {
		last, err = p.Query(expr)
		if err == nil && check(last) {
			return last
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not as expected after %v: %v %v", expr, timeout, last, err)
	return nil
}

func loadgen(t *testing.T, args ...string) *rundoc.Doc {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-q", "-json", out}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, b)
	}
	b, _ := os.ReadFile(out)
	var d rundoc.Doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestPrometheusEndToEnd starts the real target and a real Prometheus
// scraping it every second, sends a known number of requests, and checks
// through Prometheus's API that the per-worker counters sum to exactly
// that number and match, pid for pid, what the client saw; then that the
// recording rules produce imbalance and latency series.
func TestPrometheusEndToEnd(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "3")
	lgMetrics := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))

	metrics, err := exec.Command("curl", "-sf", "http://"+tg.MetricsAddr+"/metrics").Output()
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	p, err := Start(Options{
		Dir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)), Scrape: time.Second,
		Rules:   repoFile(t, "deploy/prometheus/rules.yml"),
		Targets: map[string]string{"lbbench-target": tg.MetricsAddr, "lbbench-loadgen": lgMetrics},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitFor(t, p, `up{job="lbbench-target"}`, 15*time.Second, func(s []Sample) bool { return len(s) == 1 && s[0].Value == 1 })

	const n = 3000
	d := loadgen(t, "-c", "8", "-n", strconv.Itoa(n), "-conn", "close", "http://"+tg.Addr+"/")
	if d.Requests != n {
		t.Fatalf("loadgen: %d requests, want %d", d.Requests, n)
	}
	waitFor(t, p, `sum(lbbench_target_requests_total{job="lbbench-target"})`, 15*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value == n })
	perPID, err := p.Query(`sum by (pid) (lbbench_target_requests_total{job="lbbench-target"})`)
	if err != nil {
		t.Fatal(err)
	}
	if len(perPID) != len(d.PerPID) {
		t.Errorf("Prometheus has %d pids, loadgen saw %d", len(perPID), len(d.PerPID))
	}
	for _, s := range perPID {
		pid := s.Labels["pid"]
		if pc := d.PerPID[pid]; pc == nil || float64(pc.Requests) != s.Value {
			t.Errorf("pid %s: Prometheus %v requests, loadgen %v", pid, s.Value, pc)
		}
	}
	conns, _ := p.Query(`sum(lbbench_target_accepted_connections_total{job="lbbench-target"})`)
	if len(conns) != 1 || conns[0].Value != n {
		t.Errorf("accepted connections in Prometheus: %v, want %d", conns, n)
	}

	// A run long enough for rates: the rules must yield an imbalance and
	// the loadgen p99.
	loadgen(t, "-c", "8", "-d", "4s", "-metrics-addr", lgMetrics, "-metrics-linger", "2s", "http://"+tg.Addr+"/")
	imb := waitFor(t, p, `model:lbbench_target_requests_imbalance:max_over_mean1m{model="reuseport"}`, 20*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value >= 1 && !math.IsInf(s[0].Value, 0) })
	t.Logf("imbalance %v", imb[0].Value)
	waitFor(t, p, `model:lbbench_target_requests_busiest_share:ratio1m`, 10*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value >= 1.0/3 && s[0].Value <= 1 })
	waitFor(t, p, `job:lbbench_loadgen_request_duration_seconds:p99_1m`, 10*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value > 0 && s[0].Value < 10 })
	// Over a range: loadgen has exited by now, and once a scrape of it
	// fails Prometheus marks its series stale, so an instant query of
	// the counter finds nothing however well it was scraped before.
	waitFor(t, p, `sum(max_over_time(lbbench_loadgen_requests_total[1m]))`, 10*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value > 0 })
}

// TestNativeHistogramsReplaceClassic documents what Prometheus 2.42 does
// with --enable-feature=native-histograms: it keeps the native form only.
func TestNativeHistogramsReplaceClassic(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "2")
	p, err := Start(Options{
		Dir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)), Scrape: time.Second,
		Targets: map[string]string{"t": tg.MetricsAddr}, NativeHistograms: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	loadgen(t, "-c", "4", "-n", "500", "http://"+tg.Addr+"/")
	waitFor(t, p, `histogram_count(lbbench_target_request_duration_seconds)`, 15*time.Second,
		func(s []Sample) bool { return len(s) == 1 && s[0].Value == 500 })
	// Debian bookworm's 2.42 stores the native form only; 2.45+ could keep
	// both with scrape_classic_histograms.
	if s, err := p.Query(`lbbench_target_request_duration_seconds_bucket`); err != nil || len(s) != 0 {
		t.Errorf("classic buckets with native histograms on: %d series (%v)", len(s), err)
	}
	if s, _ := p.Query(`histogram_quantile(0.5, lbbench_target_request_duration_seconds)`); len(s) != 1 || s[0].Value <= 0 {
		t.Errorf("native quantile: %v", s)
	}
}
