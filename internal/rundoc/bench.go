package rundoc

import (
	"io"
	"runtime"
	"strconv"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/kernel"
)

// Units and which way is better; declared in every benchmark file.
var units = []struct{ unit, better string }{
	{"req/s", "higher"}, {"conn/s", "higher"},
	{"p50-sec", "lower"}, {"p90-sec", "lower"}, {"p99-sec", "lower"}, {"p999-sec", "lower"},
	{"req-imbalance", "lower"}, {"conn-imbalance", "lower"}, {"jain", "higher"},
	{"locality", "higher"},
	{"failed/restart", "lower"}, {"resets/1M-conn", "lower"}, {"p99-restart-sec", "lower"},
	{"failed/crash", "lower"}, {"reset/crash", "lower"}, {"refused/crash", "lower"}, {"recovery-sec", "lower"},
	{"moved-fraction", "lower"},
	{"cpu-sec/req", "lower"}, {"server-cpu-sec/req", "lower"}, {"syscalls/req", "lower"}, {"maxrss-B", "lower"},
	{"loss-ratio", "lower"}, {"first-worker-share", "higher"}, {"multiworker-flows", "lower"}, {"hash-imbalance", "lower"},
	// The binding scenario: 1 is the claim's outcome; claimed-* the claim.
	{"bind-refused", "higher"}, {"rebind-ok", "higher"}, {"ipv4-bind-ok", "higher"}, {"specific-wins", "higher"},
	{"stray-share", "lower"}, {"copies/datagram", "higher"},
	{"claimed-bind-refused", "higher"}, {"claimed-rebind-ok", "higher"}, {"claimed-ipv4-bind-ok", "higher"}, {"claimed-specific-wins", "higher"},
	{"claimed-stray-share", "lower"}, {"claimed-copies/datagram", "higher"},
	{BoundUnit, "lower"},
	// The connections scenario: a crowd of idle connections.
	{"held-imbalance", "lower"}, {"all-answered-sec", "lower"}, {"all-connected-sec", "lower"},
	{"listen-overflows", "lower"}, {"listen-drops", "lower"}, {"syn-retrans", "lower"}, {"held-failed", "lower"},
	{"server-B/conn", "lower"},
}

// BoundUnit marks a sample that loadgen's self-check says loadgen itself
// limited (value 1; samples it did not limit do not carry it). It is a
// mark on the sample, not a figure to compare: reports flag the sample's
// cell rather than pass its figures off as the server's.
const BoundUnit = "loadgen-bound"

// Config returns the stable file-config lines for a benchmark file:
// facts of the machine that do not change between runs on it.
func Config(h kernel.Host, sysctls map[string]string, extra ...benchfmt.Config) []benchfmt.Config {
	c := []benchfmt.Config{
		{Key: "goos", Value: []byte(h.GoOS), File: true},
		{Key: "goarch", Value: []byte(h.GoArch), File: true},
		{Key: "cpu", Value: []byte(h.CPUModel), File: true},
		{Key: "cpu-count", Value: []byte(strconv.Itoa(h.CPUs)), File: true},
		{Key: "kernel", Value: []byte(h.Kernel), File: true},
		{Key: "go", Value: []byte(runtime.Version()), File: true},
	}
	// Only settings nothing in the suite changes: a value that changes
	// mid-run splits benchstat's tables (tcp_migrate_req, which
	// -restart reuseport-migrate sets, is in env.txt and the JSON).
	for _, k := range []string{"net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_tw_reuse"} {
		if v, ok := sysctls[k]; ok {
			c = append(c, benchfmt.Config{Key: k, Value: []byte(v), File: true})
		}
	}
	return append(c, extra...)
}

// WriteUnits declares the units.
func WriteUnits(w *benchfmt.Writer) error {
	for _, u := range units {
		err := w.Write(&benchfmt.UnitMetadata{
			UnitMetadataKey: benchfmt.UnitMetadataKey{Unit: u.unit, Key: "better"},
			OrigUnit:        u.unit, Value: u.better,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Result is the benchmark result line of a run. name is the benchmark
// name without the "Benchmark" prefix, e.g.
// "Accept/model=reuseport/workers=2/conn=close". Iterations are the
// successful requests.
func Result(d *Doc, name string, config []benchfmt.Config) *benchfmt.Result {
	vals := []benchfmt.Value{
		{Value: d.RequestsPerSec, Unit: "req/s"},
		{Value: d.ConnsPerSec, Unit: "conn/s"},
		{Value: d.Latency.P50, Unit: "p50-sec"},
		{Value: d.Latency.P90, Unit: "p90-sec"},
		{Value: d.Latency.P99, Unit: "p99-sec"},
		{Value: d.Latency.P999, Unit: "p999-sec"},
		{Value: d.Fairness.Requests.MaxOverMean, Unit: "req-imbalance"},
		{Value: d.Fairness.Connections.MaxOverMean, Unit: "conn-imbalance"},
		{Value: d.Fairness.Requests.Jain, Unit: "jain"},
	}
	if r := d.Restarts; r != nil && r.Count > 0 {
		// A zero would break benchstat's geomean; 1e-9 reads as zero.
		vals = append(vals,
			benchfmt.Value{Value: max(r.FailedPerRestart, 1e-9), Unit: "failed/restart"},
			benchfmt.Value{Value: max(r.ResetsPerMillion, 1e-9), Unit: "resets/1M-conn"})
		if r.P99WithRestart > 0 {
			vals = append(vals, benchfmt.Value{Value: r.P99WithRestart, Unit: "p99-restart-sec"})
		}
	}
	if d.Locality != nil {
		// Every sample carries it (a missing value would leave the cell
		// short of samples); 1e-9 stands for 0, which breaks geomeans.
		vals = append(vals, benchfmt.Value{Value: max(d.Locality.Share, 1e-9), Unit: "locality"})
	}
	if u := d.UDP; u != nil {
		vals = append(vals,
			benchfmt.Value{Value: max(u.LossRatio(), 1e-9), Unit: "loss-ratio"},
			benchfmt.Value{Value: max(u.FirstWorkerShare, 1e-9), Unit: "first-worker-share"},
			benchfmt.Value{Value: max(float64(u.FlowsMultiWorker), 1e-9), Unit: "multiworker-flows"})
	}
	if d.SelfCheck.Bottleneck {
		vals = append(vals, benchfmt.Value{Value: 1, Unit: BoundUnit})
	}
	return &benchfmt.Result{Config: config, Name: benchfmt.Name(name), Iters: int(max(d.Requests, 1)), Values: vals}
}

// WriteBench writes a complete benchmark file for one run.
func WriteBench(out io.Writer, d *Doc, name string, extra ...benchfmt.Config) error {
	w := benchfmt.NewWriter(out)
	if err := WriteUnits(w); err != nil {
		return err
	}
	if d.SelfCheck.Bottleneck {
		io.WriteString(out, "# loadgen-bound: the load generator may have limited this sample\n")
	}
	return w.Write(Result(d, name, Config(d.Host, d.Kernel.Sysctls, extra...)))
}
