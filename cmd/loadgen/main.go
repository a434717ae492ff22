// Command loadgen drives an HTTP/1.1 server with a closed or open loop,
// new connections or keep-alive, and attributes every connection and
// request to the worker pid that served it.
//
//	loadgen -c 50 -d 10s -conn close http://127.0.0.1:8080/
//	loadgen -rate 20000 -d 30s -json run.json -bench run.txt http://127.0.0.1:8080/
//	loadgen merge -json all.json a.json b.json     # runs of several generators, merged exactly
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/kattr"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/metrics"
	"github.com/lbbench/lbbench/internal/rundoc"
	"github.com/lbbench/lbbench/internal/sockets"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "merge" {
		os.Exit(runMerge(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// flags are the command line beyond the load options.
type flags struct {
	opts        load.Options
	workers     int
	jsonPath    string
	benchPath   string
	seriesPath  string
	name        string
	progress    bool
	quiet       bool
	metricsAddr string
	linger      time.Duration
	restartsURL string
	hdrLogPath  string
	startAt     time.Time
	acceptors   bool // -attribute kernel|both: trace accepts too, not only who served
}

// maxStartAhead bounds -start-at: a time further away is a mistake.
const maxStartAhead = 24 * time.Hour

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	o := &f.opts
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadgen [flags] http://HOST:PORT/PATH | udp://HOST:PORT\n")
		fs.PrintDefaults()
	}
	var src string
	fs.IntVar(&o.Conns, "c", 50, "connections (closed loop), or the pool serving -rate (open loop)")
	fs.Float64Var(&o.Rate, "rate", 0, "open loop: requests per second (with -conn close, new connections per second)")
	fs.BoolVar(&o.Poisson, "poisson", false, "open loop: Poisson arrivals instead of evenly spaced")
	fs.DurationVar(&o.Duration, "d", 0, "measured duration (default 10s in the closed loop when -n is not given)")
	fs.Int64Var(&o.Requests, "n", 0, "stop after this many measured requests")
	fs.DurationVar(&o.Warmup, "warmup", 0, "run this long before measuring")
	o.Mode = load.ModeKeepAlive
	load.Modes.Var(fs, &o.Mode, "conn", "keepalive, or close (a new TCP connection per request)")
	fs.IntVar(&o.ReqsPerConn, "reqs-per-conn", 0, "keepalive: close each connection after this many requests")
	fs.StringVar(&src, "src", "", "local source addresses, e.g. 127.0.0.2-127.0.0.20 (spreads the 4-tuple and the port space)")
	fs.StringVar(&o.PIDHeader, "pid-header", "X-Worker-Pid", "response header naming the worker pid")
	fs.StringVar(&o.IDHeader, "id-header", "X-Worker-Id", "response header naming the worker id (shown beside its pid; counted with -fair-by worker)")
	load.Protos.Var(fs, &o.Proto, "proto", "tcp (HTTP) or udp (request/reply datagrams to udp://HOST:PORT; default: the URL's scheme)")
	fs.IntVar(&o.Flows, "flows", 64, "udp: flows, each its own socket and source port")
	fs.IntVar(&o.Window, "window", 0, "udp closed loop: datagrams in flight per flow (default 1 without -rate)")
	fs.DurationVar(&o.RebindEvery, "rebind-every", 0, "udp: give every flow a new source port this often, as a NAT rebinding would")
	fs.StringVar(&o.NetNS, "netns", "", "open the load's sockets in this network namespace (a name under /var/run/netns, or a path); metrics stay in loadgen's own")
	o.Attribute = load.AttrHeader
	load.Attributions.Var(fs, &o.Attribute, "attribute", "who served a request: header (the -pid-header), kernel (the process and thread that sent each response, for any server on this host; root; Linux 6.3+, else the thread that accepted the connection), or both (cross-checked)")
	o.FairBy = load.FairProcess
	load.FairBys.Var(fs, &o.FairBy, "fair-by", "what the fairness figures count as a worker: process, thread (with -attribute kernel, the thread that served: threaded servers such as HAProxy) or worker (the -id-header the server sends: in-process workers that share a pid)")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "connect and response timeout (with https, the handshake too)")
	fs.BoolVar(&f.acceptors, "acceptors", true, "with -attribute kernel or both: trace who accepted each connection too (the acceptors and handoff tables); false traces who served alone, without a program on every system call of the host (cheaper: see the README)")
	fs.BoolVar(&o.TLS.Resume, "tls-resume", false, "https: resume TLS sessions when reconnecting (tickets, as wrk does); default a full handshake per connection, as ab does")
	fs.BoolVar(&o.TLS.Insecure, "insecure", false, "https: do not verify the server's certificate")
	fs.StringVar(&o.TLS.CACert, "cacert", "", "https: verify the server against the roots in this PEM file")
	fs.StringVar(&o.TLS.Version, "tls-version", "", "https: 1.2 or 1.3 only (default: either)")
	fs.Int64Var(&o.Seed, "seed", 0, "seed for Poisson arrivals (0: from the clock)")
	fs.IntVar(&f.workers, "workers", 0, "worker processes the target has; those that serve nothing count as zeros in the fairness figures")
	fs.StringVar(&f.jsonPath, "json", "", "write the full result as JSON to this file (-: to stdout, instead of the summary)")
	fs.StringVar(&f.benchPath, "bench", "", "write the result in the Go benchmark format to this file")
	fs.StringVar(&f.seriesPath, "series", "", "write the per-second series as CSV to this file")
	fs.StringVar(&f.name, "name", "", "benchmark name for -bench (default Loadgen/conn=MODE)")
	fs.BoolVar(&f.progress, "progress", false, "print a progress line every second even when stderr is not a terminal")
	fs.BoolVar(&f.quiet, "q", false, "no summary on stdout")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve live Prometheus metrics on HOST:PORT while running")
	fs.StringVar(&f.restartsURL, "restarts", "", "the target's restart list (http://METRICS-ADDR/restarts): count what each rolling restart cost")
	fs.StringVar(&f.hdrLogPath, "hdr-log", "", "write an HdrHistogram interval log (one latency histogram per second, nanoseconds) to this file")
	fs.Func("start-at", "wait until this time (RFC 3339, e.g. 2026-11-21T10:00:00Z), then run: several generators on several hosts start together", func(v string) error {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return errors.New("want an RFC 3339 time such as 2026-11-21T10:00:00Z")
		}
		f.startAt = t
		return nil
	})
	fs.DurationVar(&f.linger, "metrics-linger", 0, "keep serving metrics this long after the run, so a last scrape sees the final counts")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 {
		return nil, errors.New("want exactly one URL (see -h)")
	}
	o.URL = fs.Arg(0)
	set := cli.Set(fs)
	if o.Rate > 0 && !set["d"] && !set["n"] {
		return nil, errors.New("-rate needs -d DURATION or -n COUNT")
	}
	if (set["d"] && o.Duration == 0) || (set["n"] && o.Requests == 0) {
		return nil, errors.New("-d and -n must be positive")
	}
	if !set["d"] && !set["n"] {
		o.Duration = 10 * time.Second
	}
	if src != "" {
		var err error
		if o.Src, err = load.ParseSrc(src); err != nil {
			return nil, err
		}
	}
	if o.NetNS != "" {
		if err := load.CheckNetNS(load.NetNSPath(o.NetNS)); err != nil {
			return nil, fmt.Errorf("-netns %s: %v", o.NetNS, err)
		}
	}
	if f.workers < 0 {
		return nil, fmt.Errorf("-workers %d: must not be negative", f.workers)
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	udpOnly, tcpOnly := []string{"flows", "window", "rebind-every"}, []string{"c", "conn", "reqs-per-conn", "attribute", "acceptors", "pid-header", "id-header", "tls-resume", "insecure", "cacert", "tls-version"}
	for _, name := range tcpOnly {
		if set[name] && o.Proto == load.ProtoUDP {
			return nil, fmt.Errorf("-%s is TCP's; -proto udp has flows (-flows, -window)", name)
		}
	}
	for _, name := range udpOnly {
		if set[name] && o.Proto == load.ProtoTCP {
			return nil, fmt.Errorf("-%s goes with -proto udp", name)
		}
	}
	if !f.acceptors && o.Attribute == load.AttrHeader {
		return nil, errors.New("-acceptors=false goes with -attribute kernel or both")
	}
	if f.name == "" {
		f.name = "Loadgen/conn=" + o.Mode
	}
	if f.jsonPath == "-" {
		f.quiet = true // stdout is the JSON
	}
	if f.restartsURL != "" {
		if u, err := url.Parse(f.restartsURL); err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("-restarts %q: want http://HOST:PORT/restarts", f.restartsURL)
		}
	}
	if f.metricsAddr != "" {
		if _, err := sockets.ParseAddr(f.metricsAddr); err != nil {
			return nil, fmt.Errorf("-metrics-addr: %v", err)
		}
	}
	if !f.startAt.IsZero() {
		switch ahead := time.Until(f.startAt); {
		case ahead < 0:
			return nil, fmt.Errorf("-start-at %s is %v in the past", f.startAt.Format(time.RFC3339), (-ahead).Round(time.Second))
		case ahead > maxStartAhead:
			return nil, fmt.Errorf("-start-at %s is more than %v away", f.startAt.Format(time.RFC3339), maxStartAhead)
		}
	}
	for _, out := range []struct{ flag, path string }{{"-json", f.jsonPath}, {"-bench", f.benchPath}, {"-series", f.seriesPath}, {"-hdr-log", f.hdrLogPath}} {
		if out.path == "" || (out.flag == "-json" && out.path == "-") {
			continue
		}
		if err := atomicfile.CheckWritable(out.path); err != nil {
			return nil, fmt.Errorf("%s: %v", out.flag, err)
		}
	}
	return f, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if code, stop := cli.Stop("loadgen", err, stderr); stop {
		return code
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	live, stopMetrics, err := startMetrics(f)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	defer stopMetrics()

	showProgress := f.progress || isTerminal(stderr)
	start := time.Now()
	onSecond := func(s load.Second) {
		if live != nil {
			live.AddSecond(s.PerPID, s.PerPIDConns, s.ErrorKinds)
		}
		if showProgress {
			fmt.Fprintf(stderr, "[%5.1fs] %9.0f req/s  %6d errors  p99 %v\n",
				time.Since(start).Seconds(), float64(s.Requests), s.Errors, s.P99.Round(time.Microsecond))
		}
	}

	stopAttribution, err := startAttribution(f, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	defer stopAttribution()
	if err := load.ProbeTLS(&f.opts); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	if !f.startAt.IsZero() {
		fmt.Fprintf(stderr, "loadgen: starting at %s (in %v)\n", f.startAt.Format(time.RFC3339Nano), time.Until(f.startAt).Round(time.Millisecond))
		select {
		case <-time.After(time.Until(f.startAt)):
		case <-ctx.Done():
			fmt.Fprintln(stderr, "loadgen: interrupted before the start")
			return 1
		}
	}
	gen := &rundoc.Generator{Run: rand.Text(), StartAt: f.startAt.UTC(), Started: time.Now().UTC()}
	gen.Hostname, _ = os.Hostname()
	start = time.Now()
	before := kernel.Take()
	res, err := load.Run(ctx, f.opts, onSecond)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	doc := rundoc.Build(f.name, res, kernel.Observe(before, kernel.Take()), kernel.ReadHost(), f.workers, runtime.GOMAXPROCS(0))
	doc.Generator = gen
	addAfterwards(f, doc, res)
	if !f.quiet {
		rundoc.Summary(stdout, doc)
	}
	if err := writeOutputs(f, doc, stdout); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if live != nil && f.linger > 0 && ctx.Err() == nil {
		select {
		case <-time.After(f.linger):
		case <-ctx.Done():
		}
	}
	if len(doc.Problems) > 0 {
		fmt.Fprintf(stderr, "loadgen: %s\n", strings.Join(doc.Problems, "; "))
		return 1
	}
	return 0
}

// startMetrics serves the live metrics on -metrics-addr, if given, and
// has the run feed them; stop ends the server.
func startMetrics(f *flags) (live *metrics.Loadgen, stop func(), err error) {
	if f.metricsAddr == "" {
		return nil, func() {}, nil
	}
	ln, err := net.Listen("tcp", f.metricsAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen metrics %s: %v", f.metricsAddr, errors.Unwrap(err))
	}
	live = metrics.NewLoadgen(f.opts.URL, f.opts.Mode, f.opts.Rate, load.ErrorKinds)
	f.opts.Observe = live.Observe
	if f.opts.TLS.Enabled {
		f.opts.TLS.ObserveHandshake = live.TLS(append([]string{load.HandshakeFull, load.HandshakeResumed}, load.TLSFailureReasons...))
	}
	srv := &http.Server{Handler: live.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return live, func() { srv.Close() }, nil
}

// startAttribution starts kernel attribution when -attribute asks for
// it: the accept tracer (unless -acceptors=false), and the serving one
// where the kernel has its hook (else stderr says what is counted
// instead); stop ends them.
func startAttribution(f *flags, stderr io.Writer) (stop func(), err error) {
	if f.opts.Attribute == load.AttrHeader {
		return func() {}, nil
	}
	port, err := watchedPort(f.opts.URL, f.opts.NetNS)
	if err != nil {
		return nil, err
	}
	var tr *kattr.Tracer
	closeTracer := func() {}
	if f.acceptors {
		if tr, err = kattr.Start(port); err != nil {
			return nil, fmt.Errorf("-attribute: %v", err)
		}
		f.opts.Kernel, closeTracer = tr, func() { tr.Close() }
	}
	sv, err := kattr.StartServing(port)
	switch {
	case errors.Is(err, kattr.ErrNoServeHook) && tr == nil:
		return nil, fmt.Errorf("-acceptors=false: %v, and without it nothing would be counted", err)
	case errors.Is(err, kattr.ErrNoServeHook):
		fmt.Fprintf(stderr, "loadgen: %v: counting who accepted each connection instead (JSON attribution.counts \"accepts\")\n", err)
	case err != nil:
		closeTracer()
		return nil, fmt.Errorf("-attribute: %v", err)
	default:
		f.opts.Serving = sv
		return func() { sv.Close(); closeTracer() }, nil
	}
	return closeTracer, nil
}

// addAfterwards adds to doc what is known once the run is over: that
// kernel attribution saw nothing, and the target's restarts.
func addAfterwards(f *flags, doc *rundoc.Doc, res *load.Result) {
	seen, what := doc.Attribution.Recorded, "accepts"
	if doc.Attribution.AcceptsUntraced {
		seen, what = doc.Attribution.ServingRecorded, "sends"
	}
	if f.opts.Attribute != load.AttrHeader && f.opts.NetNS == "" && doc.Requests > 0 && seen == 0 {
		// The programs see every namespace, but the port's listener
		// here is not the server that answered: a server in another
		// namespace answered through a route or a veth.
		doc.Problems = append(doc.Problems, fmt.Sprintf("kernel attribution saw no %s on the port although %d responses came: is the server in another network namespace? (give -netns)", what, doc.Requests))
	}
	if f.opts.Proto == load.ProtoTCP && !f.opts.TLS.Enabled && doc.Requests == 0 && doc.Errors > 0 && load.SpeaksTLS(&f.opts) {
		doc.Problems = append(doc.Problems, fmt.Sprintf("the server at %s completes TLS handshakes: use https://%s/", f.opts.Addr(), f.opts.Addr()))
	}
	if f.restartsURL != "" {
		strategy, events, err := fetchRestarts(f.restartsURL)
		if err != nil {
			doc.Problems = append(doc.Problems, err.Error())
		} else {
			doc.AddRestarts(res, strategy, events)
		}
	}
}

func writeOutputs(f *flags, doc *rundoc.Doc, stdout io.Writer) error {
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if f.jsonPath == "-" {
			_, err = stdout.Write(b)
		} else {
			err = atomicfile.WriteBytes(f.jsonPath, b)
		}
		if err != nil {
			return err
		}
	}
	if f.benchPath != "" && doc.DurationSeconds > 0 {
		err := atomicfile.Write(f.benchPath, func(w io.Writer) error { return rundoc.WriteBench(w, doc, f.name) })
		if err != nil {
			return err
		}
	}
	if f.seriesPath != "" {
		if err := atomicfile.Write(f.seriesPath, func(w io.Writer) error { return rundoc.SeriesCSV(w, doc) }); err != nil {
			return err
		}
	}
	if f.hdrLogPath != "" {
		if err := atomicfile.Write(f.hdrLogPath, func(w io.Writer) error { return rundoc.IntervalLog(w, doc) }); err != nil {
			return err
		}
	}
	return nil
}

// watchedPort is the target's port, which must have a listening socket
// on this host: the kernel sees only this host's accepts and sends.
// With -netns the listener is in another namespace, which the check
// cannot see; the programs see every namespace's.
func watchedPort(rawURL, netns string) (uint16, error) {
	u, _ := url.Parse(rawURL)
	port := u.Port()
	if port == "" {
		port = "80"
	}
	ap, err := sockets.ParseAddr(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return 0, err
	}
	ls, err := sockets.Conflicts(ap)
	if err != nil {
		return 0, fmt.Errorf("kernel attribution: cannot list sockets: %v", err)
	}
	if len(ls) == 0 && netns == "" {
		return 0, fmt.Errorf("kernel attribution: nothing listens on %v on this host (the kernel sees only this host's servers; for a server in another network namespace give -netns)", ap)
	}
	return ap.Port(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// fetchRestarts reads the target's /restarts list.
func fetchRestarts(u string) (string, []rundoc.RestartEvent, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return "", nil, fmt.Errorf("restarts: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Strategy string                `json:"strategy"`
		Restarts []rundoc.RestartEvent `json:"restarts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", nil, fmt.Errorf("restarts %s: %w", u, err)
	}
	return body.Strategy, body.Restarts, nil
}
