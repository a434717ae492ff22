package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/budget"
	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/rundoc"
	"github.com/lbbench/lbbench/internal/syscount"
)

// peerFlags are the flags of the peer comparison.
type peerFlags struct {
	dir      string
	bin      string
	rounds   int
	duration time.Duration
	conns    int
	workers  int
	fraction float64
	only     string // "": every cell; "attribution", "tls" or "ktls": those rows alone
}

func parsePeerFlags(args []string, stderr io.Writer) (*peerFlags, error) {
	f := &peerFlags{}
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.StringVar(&f.dir, "results", "", "results folder (default results/<date>-<host>/peers)")
	fs.StringVar(&f.bin, "bin", "bin", "folder with target and loadgen")
	fs.IntVar(&f.rounds, "count", 6, "rounds; each measures every cell once, in alternating order")
	fs.DurationVar(&f.duration, "duration", 3*time.Second, "length of each measurement (whole seconds: wrk's -d)")
	fs.IntVar(&f.conns, "c", 64, "connections")
	fs.IntVar(&f.workers, "workers", 2, "server worker processes")
	fs.Float64Var(&f.fraction, "equal-load", 0.6, "offered rate of the equal-load cells, as a fraction of the slower server's closed-loop rate")
	fs.StringVar(&f.only, "only", "", "run only these rows: attribution (what kernel attribution costs), tls (the TLS clients and servers) or ktls (nginx with and without kernel TLS; not part of a full run)")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected argument %q: bench peers takes flags only", fs.Arg(0))
	}
	switch {
	case f.rounds < 1:
		return nil, usageErr("-count %d: want at least 1 (6 for benchstat's intervals)", f.rounds)
	case f.duration < time.Second || f.duration%time.Second != 0:
		return nil, usageErr("-duration %v: want whole seconds, at least 1s (wrk's -d)", f.duration)
	case f.conns < 1 || f.workers < 1:
		return nil, usageErr("-c and -workers must be positive")
	case f.fraction <= 0 || f.fraction > 1:
		return nil, usageErr("-equal-load %v: want a fraction in (0, 1]", f.fraction)
	case f.only != "" && f.only != "attribution" && f.only != "tls" && f.only != "ktls":
		return nil, usageErr("-only %q: want attribution, tls or ktls", f.only)
	}
	if f.dir == "" {
		f.dir = filepath.Join(defaultResultsDir(), "peers")
	}
	for _, b := range []string{"target", "loadgen"} {
		if _, err := os.Stat(filepath.Join(f.bin, b)); err != nil {
			return nil, fmt.Errorf("%s/%s missing: run make build first", f.bin, b)
		}
	}
	return f, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func fileConfig(extra ...benchfmt.Config) []benchfmt.Config {
	return rundoc.Config(kernel.ReadHost(), kernel.ReadSysctls(), extra...)
}

// peerBudget splits the CPUs between servers and clients and makes the
// meter of a peer run; without the system-call counter (not root, no
// BPF) it says so once and measures the rest. Close the meter after.
func peerBudget(stderr io.Writer) (budget.Budget, *budget.Meter, error) {
	split, err := budget.SplitCPUs()
	if err != nil {
		return budget.Budget{}, nil, err
	}
	m := &budget.Meter{FS: kernel.Proc}
	if m.Calls, err = syscount.Start(); err != nil {
		fmt.Fprintf(stderr, "note: %v: system calls per request are not measured\n", err)
		m.Calls = nil
	}
	return split, m, nil
}

// A peer run measures, with equal CPU budgets (servers on one CPU set,
// clients on a disjoint one, as many client threads as client CPUs):
//
//   - the servers: target (reuseport, -workers N) against nginx
//     (worker_processes N, reuseport, return 200, access log on), under
//     wrk, closed loop: rate, server CPU and system calls per request;
//   - the clients: loadgen (GOMAXPROCS = client CPUs) against wrk (-t
//     client CPUs) on the same nginx: rate, client CPU and system calls
//     per request;
//   - latency at an equal offered load: loadgen's open loop at a fraction
//     of the slower server's rate against each server: percentiles and
//     server CPU per request at the same load, not at each side's own
//     maximum.
//
// Every cell runs once a round, in alternating order; benchstat and the
// report judge the samples.
func cmdPeers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parsePeerFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.only == "ktls" {
		return cmdPeersKTLS(ctx, f, stdout, stderr)
	}
	split, m, err := peerBudget(stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	res, err := openResultsFile(f.dir, "disjoint ("+split.String()+")")
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "results in %s; %s, %d client thread(s)\n", f.dir, split, split.Threads())

	tAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	nAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	tbin, targs := budget.Pin(split.Servers, filepath.Join(f.bin, "target"), "-model", "reuseport",
		"-workers", strconv.Itoa(f.workers), "-addr", tAddr, "-metrics-addr", "off")
	tg, err := peers.StartTarget(tbin, targs...)
	if err != nil {
		return err
	}
	defer tg.Stop()
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: nAddr, Workers: f.workers, ReusePort: true,
		AccessLog: true, LogFormat: "combined", CPUs: split.Servers})
	if err != nil {
		return err
	}
	defer ng.Stop()
	servers := []peerServer{{"target", tAddr, tg.Cmd.Process.Pid}, {"nginx", nAddr, ng.Pid()}}
	tlsPeer, err := startTLSPeer(split, f.workers, f.bin)
	if err != nil {
		return err
	}
	defer tlsPeer.stop()

	p := peerRun{f: f, budget: split, m: m, res: res, config: fileConfig(), stderr: stderr}
	cells := map[string]int{"": 12 + len(tlsClientCells) + 4 + 4*len(attributionCells), "tls": len(tlsClientCells) + 4, "attribution": 4 * len(attributionCells)}
	p.progress = &progress{w: stderr, n: f.rounds * cells[f.only], start: time.Now()}
	for round := range f.rounds {
		if f.only == "" {
			if err := p.plainRound(ctx, servers, nAddr, round); err != nil {
				return err
			}
		}
		if f.only != "attribution" {
			if err := p.tlsClients(ctx, tlsPeer, round); err != nil {
				return err
			}
			if err := p.tlsServers(ctx, tlsPeer, round); err != nil {
				return err
			}
		}
		if f.only != "tls" {
			if err := p.attributionCosts(ctx, servers[0], round); err != nil {
				return err
			}
		}
	}
	if err := summarizePeers(f.dir); err != nil {
		return err
	}
	if f.only != "" { // the ratios below are the plain rows'
		fmt.Fprintf(stdout, "%s rows only: %s/REPORT.md, %s/benchstat.txt\n", f.only, f.dir, f.dir)
		return nil
	}
	return printPeerSummary(stdout, f.dir)
}

// plainRound runs a round of the plain rows, keep-alive then close: the
// servers at their maximum under wrk, the clients on the same nginx
// (at nAddr), and the servers at the same offered rate, in alternating
// order.
func (p *peerRun) plainRound(ctx context.Context, servers []peerServer, nAddr string, round int) error {
	for _, conn := range []string{"keepalive", "close"} {
		order := func(xs []peerServer) []peerServer {
			if round%2 == 1 {
				xs = slices.Clone(xs)
				slices.Reverse(xs)
			}
			return xs
		}
		// Servers at their closed-loop maximum under wrk.
		rates := map[string]float64{}
		for _, s := range order(servers) {
			r, err := p.serverMax(ctx, s, conn, round)
			if err != nil {
				return err
			}
			rates[s.name] = r
		}
		// Clients on the same nginx.
		tools := []string{"loadgen", "wrk"}
		if round%2 == 1 {
			slices.Reverse(tools)
		}
		for _, tool := range tools {
			if err := p.client(ctx, tool, nAddr, conn, round); err != nil {
				return err
			}
		}
		// Both servers at the same offered rate.
		rate := p.f.fraction * min(rates["target"], rates["nginx"])
		for _, s := range order(servers) {
			if err := p.serverEqual(ctx, s, conn, rate, round); err != nil {
				return err
			}
		}
	}
	return nil
}

// summarizePeers writes a peers folder's benchstat.txt and REPORT.md.
func summarizePeers(dir string) error {
	if err := benchstat(dir, "benchstat.txt", "-col", "/impl", "-row", ".name /side /load /conn /handshake", filepath.Join(dir, "raw.txt")); err != nil {
		return err
	}
	return results.Write(dir, peerSections)
}

type peerServer struct {
	name, addr string
	root       int // nginx master, target supervisor
}

type peerRun struct {
	f        *peerFlags
	budget   budget.Budget
	m        *budget.Meter
	res      *resultsFile
	config   []benchfmt.Config
	progress *progress
	stderr   io.Writer
}

func (p *peerRun) add(name string, iters int64, vals ...benchfmt.Value) error {
	return p.res.add(&benchfmt.Result{Config: p.config, Name: benchfmt.Name(name), Iters: int(max(iters, 1)), Values: vals}, "")
}

// perReq divides a usage by a request count.
func perReq(u budget.Usage, n int64) (cpu, calls float64) {
	if n <= 0 {
		return 0, 0
	}
	return u.CPU / float64(n), float64(u.Calls) / float64(n)
}

// serverMax: wrk against one server; the server tree's usage per request.
func (p *peerRun) serverMax(ctx context.Context, s peerServer, conn string, round int) (float64, error) {
	w, used, err := metered(p.m, s.root, func() (*peers.WrkResult, error) {
		return peers.RunWrk(ctx, "http://"+s.addr+"/", peers.WrkOptions{Threads: p.budget.Threads(), Conns: p.f.conns,
			Duration: p.f.duration, Close: conn == "close", CPUs: p.budget.Clients})
	})
	if err != nil {
		return 0, err
	}
	if w.Requests == 0 || w.Errors > w.Requests/100 {
		return 0, fmt.Errorf("wrk against %s: %d requests, %d errors", s.name, w.Requests, w.Errors)
	}
	cpu, calls := perReq(used, w.Requests)
	p.progress.step("round %d conn=%s: %s under wrk: %.0f req/s, %.1fµs server CPU and %.2f system calls per request",
		round+1, conn, s.name, w.RequestsPerSec, cpu*1e6, calls)
	return w.RequestsPerSec, p.add(fmt.Sprintf("Peer/side=server/load=max/impl=%s/conn=%s", s.name, conn), w.Requests,
		benchfmt.Value{Value: w.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: cpu, Unit: "cpu-sec/req"},
		benchfmt.Value{Value: max(calls, 1e-9), Unit: "syscalls/req"}, benchfmt.Value{Value: w.P99, Unit: "p99-sec"})
}

// client: loadgen or wrk against nginx; the client's usage per request.
func (p *peerRun) client(ctx context.Context, tool, addr, conn string, round int) error {
	c, err := p.runClient(ctx, tool, "http://"+addr+"/", conn, p.budget.Clients)
	if err != nil {
		return err
	}
	p.progress.step("round %d conn=%s: %s against nginx: %.0f req/s, %.1fµs client CPU and %.2f system calls per request",
		round+1, conn, tool, c.rate, c.cpuReq*1e6, c.calls)
	return p.add(fmt.Sprintf("Peer/side=client/load=max/impl=%s/conn=%s", tool, conn), c.n, c.values()...)
}

// clientRun is what one client's closed loop at its maximum did.
type clientRun struct {
	rate, cpuReq, calls, rss float64
	n                        int64
}

func (c clientRun) values() []benchfmt.Value {
	return []benchfmt.Value{{Value: c.rate, Unit: "req/s"}, {Value: c.cpuReq, Unit: "cpu-sec/req"},
		{Value: max(c.calls, 1e-9), Unit: "syscalls/req"}, {Value: c.rss, Unit: "maxrss-B"}}
}

// runClient runs one client (loadgen, wrk or ab) at its maximum on cpus,
// as many threads as CPUs, with loadgen's extra flags.
func (p *peerRun) runClient(ctx context.Context, tool, url, conn string, cpus []int, extra ...string) (clientRun, error) {
	var c clientRun
	var cpu float64
	var pid int
	switch tool {
	case "wrk":
		w, err := peers.RunWrk(ctx, url, peers.WrkOptions{Threads: len(cpus), Conns: p.f.conns,
			Duration: p.f.duration, Close: conn == "close", CPUs: cpus})
		if err != nil {
			return c, err
		}
		c.rate, cpu, c.n, pid, c.rss = w.RequestsPerSec, w.CPUSeconds, w.Requests, w.PID, float64(w.MaxRSSBytes)
	case "ab":
		a, err := peers.RunAB(ctx, url, peers.ABOptions{Conns: p.f.conns, Duration: p.f.duration, CPUs: cpus})
		if err != nil {
			return c, err
		}
		if a.Requests == 0 || a.Errors > a.Requests/100 {
			return c, fmt.Errorf("ab against %s: %d requests, %d errors", url, a.Requests, a.Errors)
		}
		c.rate, cpu, c.n, pid, c.rss = a.RequestsPerSec, a.CPUSeconds, a.Requests, a.PID, float64(a.MaxRSSBytes)
	default:
		run, err := p.loadgenOn(ctx, cpus, nil, url, conn, 0, extra...)
		if err != nil {
			return c, err
		}
		c.rate, cpu, c.n, pid, c.rss = run.doc.RequestsPerSec, run.cpu, run.doc.Requests, run.pid, run.rss
	}
	c.cpuReq, c.calls = perReq(budget.Usage{CPU: cpu, Calls: p.m.Process(pid)}, c.n)
	return c, nil
}

// serverEqual: loadgen's open loop at rate against one server.
func (p *peerRun) serverEqual(ctx context.Context, s peerServer, conn string, rate float64, round int) error {
	run, used, err := metered(p.m, s.root, func() (*loadgenRun, error) { return p.loadgen(ctx, "http://"+s.addr+"/", conn, rate) })
	if err != nil {
		return err
	}
	d := run.doc
	cpu, calls := perReq(used, d.Requests)
	p.progress.step("round %d conn=%s: %s at %.0f req/s offered: p99 %s, %.1fµs server CPU per request",
		round+1, conn, s.name, rate, fmtSec(d.Latency.P99), cpu*1e6)
	if d.SelfCheck.Bottleneck {
		fmt.Fprintf(p.stderr, "warning: loadgen may have limited this cell: %s\n", strings.Join(d.SelfCheck.Reasons, "; "))
	}
	return p.add(fmt.Sprintf("Peer/side=server/load=equal/impl=%s/conn=%s", s.name, conn), d.Requests,
		benchfmt.Value{Value: d.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: cpu, Unit: "cpu-sec/req"},
		benchfmt.Value{Value: max(calls, 1e-9), Unit: "syscalls/req"},
		benchfmt.Value{Value: d.Latency.P50, Unit: "p50-sec"}, benchfmt.Value{Value: d.Latency.P99, Unit: "p99-sec"},
		benchfmt.Value{Value: d.Latency.P999, Unit: "p999-sec"})
}

type loadgenRun struct {
	doc *rundoc.Doc
	cpu float64 // user+system seconds of the whole process
	rss float64
	pid int
}

// metered runs a client through run and returns what the server's
// process tree (from root) used meanwhile.
func metered[R any](m *budget.Meter, root int, run func() (R, error)) (r R, used budget.Usage, err error) {
	before, err := m.Tree(root)
	if err != nil {
		return r, used, err
	}
	if r, err = run(); err != nil {
		return r, used, err
	}
	after, err := m.Tree(root)
	if err != nil {
		return r, used, err
	}
	return r, after.Sub(before), nil
}

// loadgen runs bin/loadgen pinned to the client CPUs with GOMAXPROCS =
// client CPUs; rate > 0 is an open loop.
func (p *peerRun) loadgen(ctx context.Context, url, conn string, rate float64) (*loadgenRun, error) {
	return p.loadgenOn(ctx, p.budget.Clients, nil, url, conn, rate)
}

// loadgenOn runs bin/loadgen pinned to cpus with GOMAXPROCS = len(cpus),
// env added to its environment and the extra flags; rate > 0 is an open
// loop.
func (p *peerRun) loadgenOn(ctx context.Context, cpus []int, env []string, url, conn string, rate float64, extra ...string) (*loadgenRun, error) {
	tmp, err := os.CreateTemp("", "loadgen-*.json")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	args := []string{"-q", "-c", strconv.Itoa(p.f.conns), "-d", p.f.duration.String(), "-conn", conn, "-json", tmp.Name()}
	if rate > 0 {
		args = append(args, "-rate", strconv.FormatFloat(rate, 'f', 0, 64))
	}
	args = append(append(args, extra...), url)
	bin, args := budget.Pin(cpus, filepath.Join(p.f.bin, "loadgen"), args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(len(cpus))), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	peak := budget.WatchPeak(cmd.Process.Pid)
	err = cmd.Wait()
	rss := peak()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen: %v: %s", err, strings.TrimSpace(out.String()))
	}
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		return nil, err
	}
	var doc rundoc.Doc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	ps := cmd.ProcessState
	return &loadgenRun{doc: &doc, cpu: (ps.UserTime() + ps.SystemTime()).Seconds(), pid: cmd.Process.Pid, rss: float64(rss)}, nil
}

// peerSections are how the peer results are reported.
var peerSections = []results.Section{
	{
		Name: "Peer", Filter: "/side:server /load:max", Title: "Servers at their maximum under wrk", Cols: "/impl", Rows: "/conn",
		About: "bin/target (reuseport) against nginx (reuseport, return 200, access log on), the same worker count, both on the server CPUs; " +
			"wrk on the client CPUs. CPU and system calls per request are the server's whole process tree's.",
		Metrics: []results.Metric{
			{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "server CPU per request", Summary: true},
			{Unit: "syscalls/req", Label: "server system calls per request", Summary: true}, {Unit: "p99-sec", Label: "p99 latency (wrk)"},
		},
	},
	{
		Name: "Peer", Filter: "/side:server /load:equal", Title: "Servers at an equal offered load", Cols: "/impl", Rows: "/conn",
		About: "loadgen's open loop at the same rate against both servers (a fraction of the slower one's rate in the same round): " +
			"latency from intended send times, at the same load rather than at each server's own maximum.",
		Metrics: []results.Metric{
			{Unit: "p50-sec", Label: "p50 latency"}, {Unit: "p99-sec", Label: "p99 latency", Summary: true}, {Unit: "p999-sec", Label: "p99.9 latency"},
			{Unit: "cpu-sec/req", Label: "server CPU per request", Summary: true},
		},
	},
	{
		Name: "Peer", Filter: "/side:client", Title: "Load generators on the same nginx", Cols: "/impl", Rows: "/conn",
		About: "loadgen (GOMAXPROCS = client CPUs) against wrk (-t client CPUs), the same connections, on the client CPUs.",
		Metrics: []results.Metric{
			{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "client CPU per request", Summary: true},
			{Unit: "syscalls/req", Label: "client system calls per request"}, {Unit: "maxrss-B", Label: "peak resident memory (bytes, VmHWM)"},
		},
	},
	peerTLSSection,
	peerTLSServerSection,
	peerAttributionSections[0], peerAttributionSections[1],
	peerKTLSSection,
}

// peerTLSSection reports the TLS rows (bench peers adds them to
// the plain ones).
var peerTLSSection = results.Section{
	Name: "PeerTLS", Filter: "/side:client", Title: "Load generators over TLS on the same nginx", Cols: "/impl", Rows: "/handshake",
	About: "A new connection per request to nginx terminating TLS (a certificate made for the run). Resumed: loadgen -tls-resume " +
		"against wrk -H \"Connection: close\" (wrk resumes its sessions), on the client CPUs with as many threads; full: loadgen " +
		"against ab (a full handshake on every connection, one thread), both on one client CPU. nginx's $ssl_session_reused log " +
		"checks every cell made the handshakes its row names.",
	Metrics: []results.Metric{
		{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "client CPU per request", Summary: true},
		{Unit: "syscalls/req", Label: "client system calls per request"}, {Unit: "maxrss-B", Label: "peak resident memory (bytes, VmHWM)"},
	},
}

// peerTLSServerSection reports the servers terminating TLS.
var peerTLSServerSection = results.Section{
	Name: "PeerTLS", Filter: "/side:server", Title: "Servers terminating TLS", Cols: "/impl", Rows: "/handshake",
	About: "bin/target (reuseport, -tls-cert) against nginx (reuseport, ssl), the same certificate, worker count and server CPUs, " +
		"under loadgen on the client CPUs, a new connection per request: a full handshake on each (TLS 1.3), or resumed by ticket " +
		"(-tls-resume; the target's workers share a ticket key). Server CPU per request is the whole process tree's, the handshake most of it.",
	Metrics: []results.Metric{
		{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "server CPU per request", Summary: true},
		{Unit: "syscalls/req", Label: "server system calls per request"},
	},
}

// printPeerSummary prints the ratios a sceptical user checks first.
func printPeerSummary(w io.Writer, dir string) error {
	s, err := results.Read(dir)
	if err != nil {
		return err
	}
	med := func(name, unit string) float64 {
		var xs []float64
		for _, r := range s.Records {
			if string(r.Name) == name {
				if v, ok := r.Value(unit); ok {
					xs = append(xs, v)
				}
			}
		}
		return results.Median(xs)
	}
	fmt.Fprintf(w, "%-9s %-22s %-26s %-24s %-30s\n", "conn", "loadgen/wrk req/s", "nginx/target CPU per req", "target/nginx p99 (equal)", "system calls per request")
	for _, conn := range []string{"keepalive", "close"} {
		lg, wr := med("Peer/side=client/load=max/impl=loadgen/conn="+conn, "req/s"), med("Peer/side=client/load=max/impl=wrk/conn="+conn, "req/s")
		nc, tc := med("Peer/side=server/load=max/impl=nginx/conn="+conn, "cpu-sec/req"), med("Peer/side=server/load=max/impl=target/conn="+conn, "cpu-sec/req")
		tp, np := med("Peer/side=server/load=equal/impl=target/conn="+conn, "p99-sec"), med("Peer/side=server/load=equal/impl=nginx/conn="+conn, "p99-sec")
		calls := fmt.Sprintf("target %.2f nginx %.2f loadgen %.2f wrk %.2f",
			med("Peer/side=server/load=max/impl=target/conn="+conn, "syscalls/req"), med("Peer/side=server/load=max/impl=nginx/conn="+conn, "syscalls/req"),
			med("Peer/side=client/load=max/impl=loadgen/conn="+conn, "syscalls/req"), med("Peer/side=client/load=max/impl=wrk/conn="+conn, "syscalls/req"))
		fmt.Fprintf(w, "%-9s %-22s %-26s %-24s %s\n", conn, ratio(lg, wr), ratio(nc, tc), ratio(tp, np), calls)
	}
	for _, c := range []struct{ handshake, peer string }{{"resumed", "wrk"}, {"full", "ab"}} {
		name := "PeerTLS/side=client/load=max/impl=%s/conn=close/handshake=" + c.handshake
		lg, pr := fmt.Sprintf(name, "loadgen"), fmt.Sprintf(name, c.peer)
		fmt.Fprintf(w, "TLS, %s handshakes: loadgen/%s req/s %s, client CPU per request %s\n", c.handshake, c.peer,
			ratio(med(lg, "req/s"), med(pr, "req/s")), ratio(med(lg, "cpu-sec/req"), med(pr, "cpu-sec/req")))
	}
	fmt.Fprintf(w, "medians of the rounds; significance and intervals: %s/REPORT.md, %s/benchstat.txt\n", dir, dir)
	return nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}
