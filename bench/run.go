package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/fairness"
	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/rundoc"
	"github.com/lbbench/lbbench/internal/sockets"
)

type matrixFlags struct {
	Params
	top       *netpath.Topology
	dir       string
	bin       string
	count     int
	scenarios []Scenario
	plan      cpuPlan
	warn      io.Writer // where a sample's warnings go
}

func parseMatrixFlags(args []string, stderr io.Writer) (*matrixFlags, error) {
	top := readTopology("/sys")
	f := &matrixFlags{plan: planCPUs(top), warn: stderr}
	n := len(top.CPUs)
	var models, workers, conns, scens string
	fs := flag.NewFlagSet("matrix", flag.ContinueOnError)
	fs.StringVar(&f.dir, "results", "", "results folder (default results/<UTC date>-<host>)")
	fs.StringVar(&f.bin, "bin", "bin", "folder with target and loadgen")
	fs.IntVar(&f.count, "count", 10, "samples per cell (rounds); models are interleaved within each round")
	fs.DurationVar(&f.Duration, "duration", time.Second, "measured length of each sample")
	fs.DurationVar(&f.Warmup, "warmup", 300*time.Millisecond, "warm-up before each sample")
	fs.StringVar(&models, "models", strings.Join(defaultModels, ","), "model variants: "+strings.Join(modelNames(), ", "))
	fs.StringVar(&workers, "workers", joinInts(f.plan.Workers), "worker counts of the matrix (default 1, N, 2N with N = the target's CPUs)")
	fs.StringVar(&conns, "conns", "close,keepalive", "connection modes")
	fs.IntVar(&f.Clients, "c", f.plan.Clients, "loadgen connections (over all generators; default max(50, 8 x the largest worker count))")
	fs.StringVar(&f.Net, "net", netLoopback, "where the traffic goes: loopback, or netns (the target in a network namespace, one loadgen per client namespace; root)")
	fs.IntVar(&f.NetClients, "clients", 2, "-net netns: client namespaces (one loadgen each)")
	fs.BoolVar(&f.RSS, "rss", true, "-net netns: spread received flows over every CPU by hash, as a multiqueue NIC's RSS (RPS on every receive queue)")
	fs.BoolVar(&f.RFS, "rfs", false, "-net netns: RFS, a flow follows the CPU its socket is read on")
	fs.BoolVar(&f.XPS, "xps", false, "-net netns: XPS, CPU i transmits on queue i")
	fs.IntVar(&f.Generators, "generators", 1, "loadgen processes per sample, each with its share of -c, the rate and the -src addresses, started together and merged exactly")
	fs.StringVar(&scens, "scenarios", "matrix", "scenarios to run, comma-separated, or all: "+scenarioNames())
	fs.StringVar(&f.Src, "src", "127.0.0.2-127.0.0.33", "loadgen source addresses (spread the 4-tuple, sidestep TIME_WAIT)")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected argument %q: bench matrix takes flags only", fs.Arg(0))
	}
	f.CPUs = n
	f.Count = f.count
	f.TargetCPUs = len(f.plan.Target)
	if f.dir == "" {
		f.dir = defaultResultsDir()
		if freshDir(f.dir) != nil {
			// A second run on the same day gets its own folder.
			f.dir = defaultResultsDir() + time.Now().UTC().Format("T150405")
		}
	}
	switch {
	case f.count < 1:
		return nil, usageErr("-count %d: want at least 1 (6 or more for confidence intervals)", f.count)
	case f.Duration < 100*time.Millisecond:
		return nil, usageErr("-duration %v: want at least 100ms", f.Duration)
	case f.Warmup < 0:
		return nil, usageErr("-warmup must not be negative")
	case f.Clients < 1:
		return nil, usageErr("-c %d: want at least 1", f.Clients)
	case f.Net != netLoopback && f.Net != netNetns:
		return nil, usageErr("-net %q: want loopback or netns", f.Net)
	case f.NetClients < 1 || f.NetClients > 200:
		return nil, usageErr("-clients %d: want 1 to 200", f.NetClients)
	case (f.RFS || f.XPS) && f.Net == netLoopback:
		return nil, usageErr("-rfs and -xps steer the netns path's receive queues: add -net netns")
	case (f.RFS || f.XPS) && !f.RSS:
		return nil, usageErr("-rfs and -xps steer what -rss spread: keep -rss on")
	case f.Generators < 1 || f.Generators > 64:
		return nil, usageErr("-generators %d: want 1 to 64", f.Generators)
	case f.Generators > f.Clients:
		return nil, usageErr("-generators %d: more generators than connections (-c %d)", f.Generators, f.Clients)
	}
	if _, err := load.ParseSrc(f.Src); err != nil {
		return nil, usageErr("-src %s: %v", f.Src, err)
	}
	if err := f.parseLists(models, workers, conns, scens, flagSet(fs, "c")); err != nil {
		return nil, err
	}
	if err := checkTLSModels(f); err != nil {
		return nil, err
	}
	for _, b := range []string{"target", "loadgen"} {
		if _, err := os.Stat(filepath.Join(f.bin, b)); err != nil {
			return nil, fmt.Errorf("%s/%s missing: run make build first", f.bin, b)
		}
	}
	// Checked before the results folder exists, so a refused run leaves
	// no folder behind.
	if f.Net == netNetns && os.Geteuid() != 0 {
		return nil, errors.New("-net netns: network namespaces need root")
	}
	if err := freshDir(f.dir); err != nil {
		return nil, err
	}
	return f, nil
}

// parseLists takes the comma-separated flags: models, worker counts,
// connection modes and scenarios. Unless -c was given (cSet), the
// connections follow the largest worker count.
func (f *matrixFlags) parseLists(models, workers, conns, scens string, cSet bool) error {
	for m := range strings.SplitSeq(models, ",") {
		m = strings.TrimSpace(m)
		if _, ok := targetVariants[m]; !ok && !isServer(m) {
			return usageErr("unknown model %q (want %s)", m, strings.Join(modelNames(), ", "))
		}
		if targetVariants[m].UDP {
			return usageErr("model %s is UDP's: the udp, udp-rebind and udp-resize scenarios run it", m)
		}
		f.Models = append(f.Models, m)
	}
	for w := range strings.SplitSeq(workers, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || k < 1 || k > 1024 {
			return usageErr("workers %q: want whole numbers from 1 to 1024", w)
		}
		if !slices.Contains(f.Workers, k) {
			f.Workers = append(f.Workers, k)
		}
	}
	if !cSet {
		// Connections follow the worker counts asked for, so that
		// -workers 64 on a small box still spreads 8 per worker.
		f.Clients = defaultClients(f.Workers)
		if f.Generators > f.Clients {
			return usageErr("-generators %d: more generators than connections (-c %d)", f.Generators, f.Clients)
		}
	}
	for c := range strings.SplitSeq(conns, ",") {
		c = strings.TrimSpace(c)
		if c != "close" && c != "keepalive" {
			return usageErr("conn %q: want close or keepalive", c)
		}
		f.Conns = append(f.Conns, c)
	}
	for s := range strings.SplitSeq(scens, ",") {
		if s == "all" {
			f.scenarios = scenarios
			break
		}
		sc, ok := scenarioByName(strings.TrimSpace(s))
		if !ok {
			return usageErr("unknown scenario %q (want %s or all)", s, scenarioNames())
		}
		f.scenarios = append(f.scenarios, sc)
	}
	return nil
}

func scenarioNames() string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

// cmdMatrix runs the chosen scenarios, writes raw.txt after every sample,
// then benchstat tables and the report.
func cmdMatrix(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseMatrixFlags(args, stderr)
	if err != nil {
		return err
	}
	res, err := openResultsFile(f.dir, f.plan.String())
	if err != nil {
		return err
	}
	defer func() {
		if err := f.closeTopology(); err != nil {
			fmt.Fprintf(stderr, "warning: network path: %v\n", err)
		}
	}()
	cleanStale(stderr)
	fmt.Fprintf(stderr, "results in %s\n", f.dir)
	if f.plan.Shared {
		fmt.Fprintf(stderr, "note: %d CPUs: target and loadgen share them (disjoint CPU sets need 4 or more)\n", f.CPUs)
	}

	plan, total, err := planScenarios(f, res)
	if err != nil {
		return err
	}
	p := &progress{w: stderr, n: total, start: time.Now()}
	runErr := runRounds(ctx, f, plan, res, p, stderr)
	if res.samples == 0 {
		return runErr
	}
	if errors.Is(runErr, context.Canceled) {
		fmt.Fprintf(stderr, "interrupted: keeping the %d completed samples\n", res.samples)
		if err := res.markInterrupted(total); err != nil {
			return err
		}
	} else if runErr != nil {
		return runErr
	}
	if err := summarize(f.dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s (raw.txt, benchstat.txt, REPORT.md)\n", f.dir)
	return runErr
}

// planned is a scenario and the cells it runs.
type planned struct {
	sc    Scenario
	cells []Cell
}

// planScenarios lists the cells of the chosen scenarios and their number
// of samples; a scenario that measures without cells (Measure) runs now.
func planScenarios(f *matrixFlags, res *resultsFile) ([]planned, int, error) {
	var plan []planned
	total := 0
	for _, sc := range f.scenarios {
		if sc.Measure != nil {
			if err := sc.Measure(f.Params, res); err != nil {
				return nil, 0, fmt.Errorf("%s: %w", sc.Name, err)
			}
			continue
		}
		cells := withKernelAttribution(sc.Cells(f.Params))
		if len(cells) > 0 && cells[0].Kernel && os.Geteuid() != 0 {
			return nil, 0, fmt.Errorf("%s: real servers are attributed by the kernel (BPF): run as root", sc.Name)
		}
		plan = append(plan, planned{sc, cells})
		total += len(cells) * sc.rounds(f.count)
	}
	return plan, total, nil
}

// runRounds runs the plan round by round, every scenario's cells
// interleaved within a round, and adds each sample to res as it ends.
func runRounds(ctx context.Context, f *matrixFlags, plan []planned, res *resultsFile, p *progress, stderr io.Writer) error {
	rates := map[string]float64{} // scenario -> open-loop rate
	for round := range f.count {
		for _, pl := range plan {
			if round >= pl.sc.rounds(f.count) {
				continue
			}
			if needsRate(pl.cells) && rates[pl.sc.Name] == 0 {
				r, err := calibrate(ctx, f, pl.cells, stderr)
				if err != nil {
					return err
				}
				rates[pl.sc.Name] = r
				fmt.Fprintf(stderr, "%s: open-loop rate %.0f req/s (%.0f%% of the slowest model's closed-loop rate)\n",
					pl.sc.Name, r, 100*pl.cells[0].RateFraction)
			}
			for _, c := range interleave(pl.cells, round) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				doc, rec, err := runCell(ctx, f, c, round, rates[pl.sc.Name])
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return fmt.Errorf("%s round %d: %w", c.Name, round+1, err)
				}
				if err := res.add(rec, sampleComment(doc)); err != nil {
					return err
				}
				p.step("%s: %s", c.Name, progressLine(doc))
			}
		}
	}
	return nil
}

// sampleComment is what raw.txt says of a sample beside its line: that
// loadgen was the bottleneck (its self-check), and the run's problems.
func sampleComment(doc *rundoc.Doc) string {
	comment := ""
	if doc.SelfCheck.Bottleneck {
		comment = "loadgen-bound: " + strings.Join(doc.SelfCheck.Reasons, "; ")
	}
	if len(doc.Problems) > 0 {
		comment = strings.TrimPrefix(comment+"; problems: "+strings.Join(doc.Problems, "; "), "; ")
	}
	return comment
}

// summarize writes the benchstat tables and the report of a results
// folder.
func summarize(dir string) error {
	raw := filepath.Join(dir, "raw.txt")
	if err := benchstat(dir, "benchstat.txt", "-col", "/model", raw); err != nil {
		return err
	}
	if err := benchstat(dir, "benchstat-workers.txt", "-col", "/workers@num", "-row", ".name /model /conn", raw); err != nil {
		return err
	}
	return results.Write(dir, sections())
}

func needsRate(cells []Cell) bool {
	return slices.ContainsFunc(cells, func(c Cell) bool { return c.RateFraction > 0 })
}

// interleave orders cells group by group, rotating the model order each
// round so that no model always runs first or last.
func interleave(cells []Cell, round int) []Cell {
	var groups []string
	by := map[string][]Cell{}
	for _, c := range cells {
		g := c.group()
		if by[g] == nil {
			groups = append(groups, g)
		}
		by[g] = append(by[g], c)
	}
	var out []Cell
	for _, g := range groups {
		cs := by[g]
		k := round % len(cs)
		out = append(out, cs[k:]...)
		out = append(out, cs[:k]...)
	}
	return out
}

// calibrate measures each model's closed-loop rate once and returns the
// open-loop rate: the fraction of the slowest.
func calibrate(ctx context.Context, f *matrixFlags, cells []Cell, stderr io.Writer) (float64, error) {
	slowest := 0.0
	for _, c := range cells {
		cc := c
		cc.RateFraction, cc.Stall = 0, nil
		// loadgen's own settings too: the capacity is the closed loop's
		// at the -c flag's connections.
		cc.Clients, cc.Timeout, cc.Poisson, cc.TLSResume = 0, 0, false, false
		cc.Duration = time.Second
		fmt.Fprintf(stderr, "calibrating %s\n", c.Name)
		doc, _, err := runCell(ctx, f, cc, -1, 0)
		if err != nil {
			return 0, fmt.Errorf("calibrate %s: %w", c.Name, err)
		}
		if slowest == 0 || doc.RequestsPerSec < slowest {
			slowest = doc.RequestsPerSec
		}
	}
	if slowest < 1 {
		return 0, errors.New("calibration measured no throughput")
	}
	return cells[0].RateFraction * slowest, nil
}

// runCell starts a fresh target, runs loadgen on it, stops the target and
// returns loadgen's document and the benchmark line of the sample.
// round < 0 is a calibration run (not kept).
func runCell(ctx context.Context, f *matrixFlags, c Cell, round int, rate float64) (*rundoc.Doc, *benchfmt.Result, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, nil, err
	}
	metricsAddr := "off"
	if c.Restarts || c.Crash != nil {
		if metricsAddr, err = freeLoopbackAddr(); err != nil {
			return nil, nil, err
		}
	}
	ns, onPath, err := f.cellNet(c)
	if err != nil {
		return nil, nil, err
	}
	addr, metricsAddr = onPath(addr), onPath(metricsAddr)
	var tf tlsFiles
	if c.TLS {
		if tf, err = newTLSFiles(addr); err != nil {
			return nil, nil, err
		}
		defer tf.remove()
	}
	srv, start, err := startServer(f, c, addr, metricsAddr, ns, tf)
	if err != nil {
		return nil, nil, err
	}
	crash, current, stopCrash := armCrash(ctx, f, c, srv, start, metricsAddr)
	defer func() {
		stopCrash() // no restart may follow the stop
		if err := current().Stop(); err != nil && ctx.Err() == nil && c.Crash == nil {
			fmt.Fprintf(f.warn, "warning: %s: %s: %v\n", c.Name, c.Model, err)
		}
		if ns == "" {
			assertPortFree(f.warn, addr)
		}
	}()
	stopStall, err := armStall(f, c, srv)
	if err != nil {
		return nil, nil, err
	}
	defer stopStall()

	jsonPath, cleanup, err := f.samplePath(c, round)
	if err != nil {
		return nil, nil, err
	}
	defer cleanup()
	var cr *crowd
	if c.Hold != nil {
		if cr, err = openCrowd(f, c, addr, srv); err != nil {
			return nil, nil, err
		}
		defer cr.close()
	}
	doc, err := runLoad(ctx, f, c, sampleLoad{addr: addr, metricsAddr: metricsAddr, cacert: tf.cert, rate: rate}, jsonPath)
	if err != nil {
		return nil, nil, err
	}
	rec := rundoc.Result(doc, c.Name, fileConfig())
	if c.Flows > 0 {
		// Beside the measured spread, what uniform hashing would give
		// (computed, not measured).
		exp, _ := fairness.BallsIntoBins(c.Flows, c.Workers, 100000)
		rec.Values = append(rec.Values, benchfmt.Value{Value: exp, Unit: "hash-imbalance"})
	}
	if cr != nil {
		rec.Values = append(rec.Values, cr.values()...)
	}
	if crash != nil {
		vals, err := crash.values(doc)
		if err != nil {
			return nil, nil, err
		}
		rec.Values = append(rec.Values, vals...)
	}
	return doc, rec, nil
}

// armCrash starts c.Crash's killer on srv once the warm-up is over; the
// target it returns follows the restarts. Stop it (it returns once the
// killer has) before stopping that target. Without c.Crash it does
// nothing.
func armCrash(ctx context.Context, f *matrixFlags, c Cell, srv server, start func() (server, error), metricsAddr string) (*crasher, func() server, func()) {
	if c.Crash == nil {
		return nil, func() server { return srv }, func() {}
	}
	restart := func() (*peers.Target, error) {
		s, err := start()
		if err != nil {
			return nil, err
		}
		return s.(targetServer).Target, nil
	}
	crash := &crasher{c: c.Crash, addr: metricsAddr, restart: restart, tg: srv.(targetServer).Target}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { crash.run(cctx, time.Now().Add(f.Warmup)); close(done) }()
	current := func() server { return targetServer{Target: crash.target()} }
	// Stopping waits for the killer, so that a restart under way ends
	// before the target it started is stopped.
	return crash, current, func() { cancel(); <-done }
}

// armStall pauses one worker of srv (SIGSTOP) c.Stall.After into the
// sample for c.Stall.For; the func it returns cancels the pause and lets
// the worker go on. Without c.Stall it does nothing.
func armStall(f *matrixFlags, c Cell, srv server) (func(), error) {
	if c.Stall == nil {
		return func() {}, nil
	}
	pid := srv.stallPID()
	if pid == 0 {
		return nil, fmt.Errorf("%s: one worker of %s cannot be paused alone", c.Name, c.Model)
	}
	stop := time.AfterFunc(f.Warmup+c.Stall.After, func() {
		syscall.Kill(pid, syscall.SIGSTOP)
		time.AfterFunc(c.Stall.For, func() { syscall.Kill(pid, syscall.SIGCONT) })
	})
	return func() { stop.Stop(); syscall.Kill(pid, syscall.SIGCONT) }, nil
}

// samplePath is where loadgen writes the sample's JSON: the results
// folder's json/, or for a calibration run (round < 0) a temporary
// folder that cleanup removes.
func (f *matrixFlags) samplePath(c Cell, round int) (path string, cleanup func(), err error) {
	if round < 0 {
		tmp, err := os.MkdirTemp("", "lbbench-calibrate-")
		if err != nil {
			return "", nil, err
		}
		return filepath.Join(tmp, "calibrate.json"), func() { os.RemoveAll(tmp) }, nil
	}
	name := strings.NewReplacer("/", "_", "=", "-").Replace(c.Name) + fmt.Sprintf("_r%02d.json", round+1)
	return filepath.Join(f.dir, "json", name), func() {}, nil
}

// startServer starts the cell's server, the target or a real one, and
// returns it with the way to start it again (for crash cells).
// tf, unless zero, is the certificate and key it terminates TLS with.
func startServer(f *matrixFlags, c Cell, addr, metricsAddr, ns string, tf tlsFiles) (server, func() (server, error), error) {
	if c.TLS && !canTLS(c.Model) {
		return nil, nil, fmt.Errorf("%s: the suite cannot make %s terminate TLS", c.Name, c.Model)
	}
	var start func() (server, error)
	if sm, ok := serverModels[c.Model]; ok {
		o := serverOptions{bin: f.bin, addr: addr, workers: c.Workers, work: c.Work, netns: ns, certFile: tf.cert, keyFile: tf.key}
		if c.Hold != nil {
			o.conns = c.Hold.Conns + f.Clients + connSpare
		}
		if !f.plan.Shared {
			o.cpus = f.plan.Target
		}
		start = func() (server, error) { return sm.start(o) }
	} else {
		tbin, targs := onCPUs(filepath.Join(f.bin, "target"), targetArgs(c, addr, metricsAddr, tf), f.plan, true)
		start = func() (server, error) {
			tg, err := peers.StartTargetIn(ns, tbin, targs...)
			if err != nil {
				return nil, err
			}
			return targetServer{Target: tg, inproc: inProc(c.Model)}, nil
		}
	}
	srv, err := start()
	return srv, start, err
}

// onCPUs runs the target on the plan's target CPUs and loadgen on its
// loadgen CPUs when they are disjoint; shared CPUs need no pinning.
func onCPUs(bin string, args []string, p cpuPlan, target bool) (string, []string) {
	if p.Shared {
		return bin, args
	}
	list := cpuList(p.Target)
	if !target {
		list = cpuList(p.Loadgen)
	}
	return "taskset", append([]string{"-c", list, bin}, args...)
}

// assertPortFree warns when a stopped target still has a listener bound.
func assertPortFree(w io.Writer, addr string) {
	ap, err := sockets.ParseAddr(addr)
	if err != nil {
		return
	}
	if ls, err := sockets.Listeners(ap.Port()); err == nil && len(ls) > 0 {
		fmt.Fprintf(w, "warning: %s still has %d listening socket(s) after the target stopped\n", addr, len(ls))
	}
}

func fmtSec(s float64) string {
	return time.Duration(s * 1e9).Round(time.Microsecond).String()
}

// progressLine is a finished sample in a few figures: for UDP the loss
// and the datagram imbalance, which has no connections or TIME_WAIT.
func progressLine(doc *rundoc.Doc) string {
	if u := doc.UDP; u != nil {
		return fmt.Sprintf("%.0f datagrams/s, p99 %s, loss %.4f, imbalance %.2f",
			doc.RequestsPerSec, fmtSec(doc.Latency.P99), u.LossRatio(), doc.Fairness.Requests.MaxOverMean)
	}
	return fmt.Sprintf("%.0f req/s, p99 %s, conn imbalance %.2f, TIME_WAIT %d",
		doc.RequestsPerSec, fmtSec(doc.Latency.P99), doc.Fairness.Connections.MaxOverMean, doc.Kernel.TimeWaitBefore)
}

// flagSet says whether the command line gave the flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
