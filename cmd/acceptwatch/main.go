// Command acceptwatch watches a TCP port on this host and shows, once a
// second and at the end, which processes and threads accept its new
// connections (as the kernel saw each accept) and which serve them (send
// on them first: Linux 6.3+), how evenly, who handed connections to
// whom, the accept queue of every listening socket on the port, and the
// host's listen overflows. It generates no load: point it at a live server (nginx,
// HAProxy, a Go service) while its clients run. It needs root (BPF).
//
//	acceptwatch -port 8080 -d 30s -by thread -metrics-addr 127.0.0.1:9102
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/procfs"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/fairness"
	"github.com/lbbench/lbbench/internal/kattr"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/sockets"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type options struct {
	port        int
	duration    time.Duration
	by          string
	workers     int
	metricsAddr string
	jsonPath    string
	quiet       bool
	expect      []int // the server's pids; nil: the owners of the first listeners seen
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("acceptwatch", flag.ContinueOnError)
	fs.IntVar(&o.port, "port", 0, "the TCP port to watch (required)")
	fs.DurationVar(&o.duration, "d", 0, "how long to watch (0: until Ctrl-C)")
	fs.StringVar(&o.by, "by", "process", "what the fairness figures count: process or thread (by who accepted each connection), serving-process or serving-thread (by who sent on it first)")
	fs.IntVar(&o.workers, "workers", 0, "workers the server has; those that accept nothing count as zeros in the fairness figures")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics on HOST:PORT while watching")
	fs.StringVar(&o.jsonPath, "json", "", "write the final counts to this file")
	fs.BoolVar(&o.quiet, "q", false, "no line per second; only the summary")
	fs.Func("expect", "PID,...: the server's processes; listeners and accepts of any other are marked foreign (default: who held the port at start)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				return fmt.Errorf("%q is not a pid", f)
			}
			o.expect = append(o.expect, pid)
		}
		return nil
	})
	if err := cli.Parse(fs, args, stderr); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q (the port goes in -port)", fs.Arg(0))
	case o.port < 1 || o.port > 65535:
		return nil, errors.New("-port: give the port to watch, 1 to 65535")
	case o.duration < 0:
		return nil, errors.New("-d must not be negative")
	case !slices.Contains([]string{byProcess, byThread, byServingProcess, byServingThread}, o.by):
		return nil, fmt.Errorf("-by %q: want process, thread, serving-process or serving-thread", o.by)
	case o.workers < 0:
		return nil, errors.New("-workers must not be negative")
	}
	if o.metricsAddr != "" {
		if _, err := sockets.ParseAddr(o.metricsAddr); err != nil {
			return nil, fmt.Errorf("-metrics-addr: %v", err)
		}
	}
	if o.jsonPath != "" {
		if err := atomicfile.CheckWritable(o.jsonPath); err != nil {
			return nil, fmt.Errorf("-json: %v", err)
		}
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if code, stop := cli.Stop("acceptwatch", err, stderr); stop {
		return code
	}
	if err := watch(o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "acceptwatch: %v\n", err)
		return 1
	}
	return 0
}

// What -by counts.
const (
	byProcess        = "process"
	byThread         = "thread"
	byServingProcess = "serving-process"
	byServingThread  = "serving-thread"
)

// servingBy says whether -by counts the serving side.
func servingBy(by string) bool { return by == byServingProcess || by == byServingThread }

// Summary is what -json writes: every accept seen, by process and by
// thread, the serving side, and the fairness figures over what -by
// counts.
type Summary struct {
	Port            int                  `json:"port"`
	DurationSeconds float64              `json:"duration_seconds"`
	Accepts         int64                `json:"accepts"`
	Missed          int64                `json:"missed"`
	By              string               `json:"by"`
	PerPID          map[string]*Count    `json:"per_pid"`
	PerTID          map[string]*Count    `json:"per_tid"`
	Fairness        fairness.Figures     `json:"fairness"`
	Sockets         []Socket             `json:"sockets"`
	Kernel          map[string]uint64    `json:"kernel_deltas"` // ListenOverflows, ListenDrops (the whole host)
	Seconds         []map[string]float64 `json:"per_second_share,omitempty"`
	// Expected are the server's pids (-expect, or who held the port at
	// start); ForeignAccepts the accepts by any other process.
	Expected       []int `json:"expected_pids"`
	ForeignAccepts int64 `json:"foreign_accepts"`
	// Serving is who served the connections (nil: a kernel without the
	// hook).
	Serving *ServingSummary `json:"serving,omitempty"`
}

// Count is one process's or thread's accepts.
type Count struct {
	PID     int    `json:"pid"`
	Comm    string `json:"comm"`
	Accepts int64  `json:"accepts"`
}

// Socket is a listening socket on the port and who holds it.
type Socket struct {
	Addr     string `json:"addr"`
	Inode    uint64 `json:"inode"`
	Owners   []int  `json:"owners"`
	Queue    uint32 `json:"queue"`
	MaxQueue uint32 `json:"max_queue"` // the longest seen at a one-second look
	Backlog  uint32 `json:"backlog"`
	// Foreign: no owner is an expected pid (a stray in the group takes
	// its share; MaxQueue shows what waits on one that never accepts).
	Foreign bool `json:"foreign,omitempty"`
	// Gone: a foreign socket that closed before the watch ended. It
	// stays in the summary, since it explains the foreign accepts;
	// other closed sockets leave the table.
	Gone bool `json:"gone,omitempty"`
}

// tally counts accepts by process and by thread.
type tally struct {
	pids, tids map[int]*Count
	total      int64
}

func newTally() *tally { return &tally{pids: map[int]*Count{}, tids: map[int]*Count{}} }

func (t *tally) add(ev kattr.Event) {
	for _, k := range []struct {
		m  map[int]*Count
		id int
	}{{t.pids, ev.PID}, {t.tids, ev.TID}} {
		c := k.m[k.id]
		if c == nil {
			c = &Count{PID: ev.PID, Comm: ev.Comm}
			k.m[k.id] = c
		}
		c.Accepts++
	}
	t.total++
}

// units are the counts the fairness figures are over, zeros added for
// workers that took nothing.
func units(counts map[int]int64, workers int) []float64 {
	var xs []float64
	for _, n := range counts {
		xs = append(xs, float64(n))
	}
	for len(xs) < workers {
		xs = append(xs, 0)
	}
	return xs
}

func watch(o *options, stdout, stderr io.Writer) error {
	ls, err := sockets.Listeners(uint16(o.port))
	if err != nil {
		return fmt.Errorf("cannot list sockets: %v", err)
	}
	if len(ls) == 0 {
		return fmt.Errorf("nothing listens on port %d on this host (the kernel sees only this host's servers)", o.port)
	}
	w := &watcher{o: o, stderr: stderr}
	stop, err := w.startTracing()
	if err != nil {
		return err
	}
	defer stop()

	// SIGHUP (the terminal closed) ends the watch like Ctrl-C: the
	// summary and -json are written, not lost to the default action.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	if o.duration > 0 {
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	until := "Ctrl-C ends it"
	if o.duration > 0 {
		until = "for " + o.duration.String()
	}
	fmt.Fprintf(stderr, "watching port %d (%d listening sockets), %s\n", o.port, len(ls), until)
	w.begin(ls)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		if !w.second(done) {
			break
		}
	}
	return w.finish(stdout)
}

// watcher is one watch: the tracers, the sockets seen and the tallies.
type watcher struct {
	o      *options
	stderr io.Writer
	tr     *kattr.Tracer
	sv     *kattr.Sends // nil: the kernel has no serving hook
	m      *watchMetrics
	// The sockets listening on the port, by inode; the foreign ones that
	// closed during the watch; who owns which socket; the pids expected.
	socks       map[uint64]*Socket
	goneForeign []Socket
	owners      map[uint64][]int
	expect      []int
	total       *tally
	srv         *serving
	sum         *Summary
	before      map[string]uint64
	start       time.Time
}

// startTracing starts the accept tracer, the serving one where the
// kernel has its hook, and the metrics; stop ends them.
func (w *watcher) startTracing() (stop func(), err error) {
	o := w.o
	var stops []func()
	stop = func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	if w.tr, err = kattr.Start(uint16(o.port)); err != nil {
		return nil, err
	}
	stops = append(stops, func() { w.tr.Close() })
	sv, err := kattr.StartServing(uint16(o.port))
	switch {
	case errors.Is(err, kattr.ErrNoServeHook):
		instead := ""
		if servingBy(o.by) {
			o.by = map[string]string{byServingProcess: byProcess, byServingThread: byThread}[o.by]
			instead = "; the fairness figures count accepts by " + o.by
		}
		fmt.Fprintf(w.stderr, "acceptwatch: %v: watching accepts only%s\n", err, instead)
	case err != nil:
		stop()
		return nil, err
	default:
		w.sv = sv
		stops = append(stops, func() { sv.Close() })
	}
	if o.metricsAddr != "" {
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("listen metrics %s: %v", o.metricsAddr, errors.Unwrap(err))
		}
		w.m = newWatchMetrics(o.port, w.sv != nil)
		srv := &http.Server{Handler: promhttp.HandlerFor(w.m.reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		stops = append(stops, func() { srv.Close() })
	}
	return stop, nil
}

// begin notes the kernel's counters and who is expected to listen: the
// -expect pids, else the owners of the sockets listening now (ls).
func (w *watcher) begin(ls []sockets.Listener) {
	w.before, _ = kernel.TcpExt()
	w.owners = socketOwners()
	w.expect = w.o.expect
	if w.expect == nil {
		for _, l := range ls {
			for _, p := range w.owners[l.Inode] {
				if !slices.Contains(w.expect, p) {
					w.expect = append(w.expect, p)
				}
			}
		}
	}
	w.socks = map[uint64]*Socket{}
	w.total = newTally()
	w.srv = newServing()
	w.sum = &Summary{Port: w.o.port, By: w.o.by}
	w.start = time.Now()
}

// second takes the second's accepts and sends, looks at the listening
// sockets and prints the second's line. It returns false when the
// watch is done and the last second saw nothing (no line for it).
func (w *watcher) second(done bool) bool {
	o, m := w.o, w.m
	sec, secServed := newTally(), newServeTally()
	accepts := w.tr.Read()
	for _, ev := range accepts {
		sec.add(ev)
		w.total.add(ev)
		m.observe(ev)
	}
	if w.sv != nil {
		w.srv.step(accepts, w.sv.ReadSends(), secServed, m, w.tr.Mono(time.Now()))
		m.servingMissed(w.sv.Missed())
	}
	ls := w.lookAtSockets()
	now, _ := kernel.TcpExt()
	m.kernel(w.before, now, w.tr.Missed())
	if done && sec.total == 0 && secServed.conns == 0 {
		return false
	}
	counts, n := sec.counts(o.by), sec.total
	if servingBy(o.by) {
		counts, n = secServed.counts(o.by), secServed.conns
	}
	shares := map[string]float64{}
	for id, c := range counts {
		shares[strconv.Itoa(id)] = float64(c) / float64(max(n, 1))
	}
	w.sum.Seconds = append(w.sum.Seconds, shares)
	if !o.quiet {
		fmt.Fprintln(w.stderr, secondLine(time.Since(w.start), sec.total, counts, n, units(counts, o.workers), o, ls, w.before, now))
	}
	return true
}

// lookAtSockets lists the sockets listening on the port now, notes
// their queues, names new foreign ones and forgets the closed.
func (w *watcher) lookAtSockets() []sockets.Listener {
	ls, lerr := sockets.Listeners(uint16(w.o.port))
	if lerr == nil {
		// A server that exited closed its sockets: they leave the
		// table (and the metrics) rather than show a stale queue.
		listed := map[uint64]bool{}
		for _, l := range ls {
			listed[l.Inode] = true
		}
		for ino, s := range w.socks {
			if !listed[ino] {
				w.m.forget(s)
				delete(w.socks, ino)
				if s.Foreign {
					s.Gone = true
					w.goneForeign = append(w.goneForeign, *s)
				}
			}
		}
	}
	for _, l := range ls {
		s := w.socks[l.Inode]
		if s == nil {
			if _, known := w.owners[l.Inode]; !known {
				w.owners = socketOwners() // a socket opened since: look again
			}
			s = &Socket{Addr: l.Addr.String(), Inode: l.Inode, Owners: w.owners[l.Inode], Backlog: l.Backlog}
			s.Foreign = !slices.ContainsFunc(s.Owners, func(p int) bool { return slices.Contains(w.expect, p) })
			if s.Foreign {
				fmt.Fprintf(w.stderr, "foreign listener on %s: socket %d held by %v, not an expected pid %v\n", s.Addr, s.Inode, s.Owners, w.expect)
			}
			w.socks[l.Inode] = s
		}
		s.Queue, s.MaxQueue = l.Queue, max(s.MaxQueue, l.Queue)
		w.m.queue(s)
	}
	return ls
}

// finish completes the summary, prints it, writes -json and says what
// the ring buffers could not hold.
func (w *watcher) finish(stdout io.Writer) error {
	o, sum, total, sv := w.o, w.sum, w.total, w.sv
	after, _ := kernel.TcpExt()
	sum.DurationSeconds = time.Since(w.start).Seconds()
	sum.Accepts, sum.Missed = total.total, w.tr.Missed()
	sum.PerPID, sum.PerTID = byID(total.pids), byID(total.tids)
	sum.Fairness = fairness.Compute(units(total.counts(o.by), o.workers))
	if sv != nil {
		sum.Serving = w.srv.summary(sv.Missed())
		if servingBy(o.by) {
			sum.Fairness = fairness.Compute(units(w.srv.total.counts(o.by), o.workers))
		}
	}
	sum.Expected = slices.Sorted(slices.Values(w.expect))
	for pid, c := range total.pids {
		if !slices.Contains(w.expect, pid) {
			sum.ForeignAccepts += c.Accepts
		}
	}
	sum.Kernel = map[string]uint64{}
	for _, k := range []string{"ListenOverflows", "ListenDrops"} {
		sum.Kernel[k] = after[k] - w.before[k]
	}
	for _, ino := range slices.Sorted(maps.Keys(w.socks)) {
		sum.Sockets = append(sum.Sockets, *w.socks[ino])
	}
	sum.Sockets = append(sum.Sockets, w.goneForeign...)
	printSummary(stdout, sum)
	if o.jsonPath != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := atomicfile.WriteBytes(o.jsonPath, append(b, '\n')); err != nil {
			return err
		}
	}
	if sum.Missed > 0 {
		return fmt.Errorf("%d accepts could not be recorded (the ring buffer was full): the counts are short by that many", sum.Missed)
	}
	if s := sum.Serving; s != nil && s.Missed > 0 {
		return fmt.Errorf("%d sends could not be recorded (the ring buffer was full): the serving counts may miss connections", s.Missed)
	}
	return nil
}

// counts are the second's accepts by what by counts.
func (t *tally) counts(by string) map[int]int64 {
	m := t.pids
	if by == byThread {
		m = t.tids
	}
	out := map[int]int64{}
	for id, c := range m {
		out[id] = c.Accepts
	}
	return out
}

// counts are the second's served connections by what by counts.
func (t *serveTally) counts(by string) map[int]int64 {
	m := t.pids
	if by == byServingThread {
		m = t.tids
	}
	out := map[int]int64{}
	for id, c := range m {
		if c.Connections > 0 {
			out[id] = c.Connections
		}
	}
	return out
}

func byID(m map[int]*Count) map[string]*Count {
	out := map[string]*Count{}
	for id, c := range m {
		out[strconv.Itoa(id)] = c
	}
	return out
}

// secondLine is one second: accepts, the busiest workers' shares (of
// what -by counts: n in all), Jain, the accept queues and the host's
// listen overflows so far.
func secondLine(since time.Duration, accepts int64, m map[int]int64, n int64, xs []float64, o *options, ls []sockets.Listener, before, now map[string]uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%5.1fs] %7d accepts", since.Seconds(), accepts)
	if servingBy(o.by) {
		fmt.Fprintf(&b, " %7d served", n)
	}
	ids := slices.SortedFunc(maps.Keys(m), func(a, c int) int { return cmp.Compare(m[c], m[a]) })
	tag := map[string]string{byProcess: "p", byThread: "t", byServingProcess: "sp", byServingThread: "st"}[o.by]
	for i, id := range ids {
		if i == 4 {
			fmt.Fprintf(&b, " +%d more", len(ids)-4)
			break
		}
		fmt.Fprintf(&b, "  %s %d %4.1f%%", tag, id, 100*float64(m[id])/float64(n))
	}
	if n > 0 {
		fmt.Fprintf(&b, "  Jain %.3f", fairness.Compute(xs).Jain)
	}
	var q []string
	for _, l := range ls {
		q = append(q, fmt.Sprintf("%d/%d", l.Queue, l.Backlog))
	}
	fmt.Fprintf(&b, "  queue %s  overflows +%d", strings.Join(q, " "), now["ListenOverflows"]-before["ListenOverflows"])
	return b.String()
}

func printSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "%.1fs on port %d: %d accepts (%.0f/s), %d missed\n", s.DurationSeconds, s.Port, s.Accepts,
		float64(s.Accepts)/max(s.DurationSeconds, 1e-9), s.Missed)
	fmt.Fprintf(w, "\n  %-10s %-16s %10s %7s\n", "pid", "comm", "accepts", "share")
	for _, id := range byAccepts(s.PerPID) {
		c := s.PerPID[id]
		fmt.Fprintf(w, "  %-10s %-16s %10d %6.1f%%\n", id, c.Comm, c.Accepts, 100*float64(c.Accepts)/float64(max(s.Accepts, 1)))
	}
	fmt.Fprintf(w, "\n  %-10s %-10s %-16s %10s %7s\n", "tid", "pid", "comm", "accepts", "share")
	for _, id := range byAccepts(s.PerTID) {
		c := s.PerTID[id]
		fmt.Fprintf(w, "  %-10s %-10d %-16s %10d %6.1f%%\n", id, c.PID, c.Comm, c.Accepts, 100*float64(c.Accepts)/float64(max(s.Accepts, 1)))
	}
	if f := s.Fairness; s.Accepts == 0 {
		// Jain 1.0000 over nothing would read as perfectly fair.
		fmt.Fprintf(w, "\n  Fairness by %s: no connections were accepted\n", s.By)
	} else {
		fmt.Fprintf(w, "\n  Fairness by %s over %d: max/mean %.3f  min/mean %.3f  CoV %.3f  Jain %.4f  chi2 %.1f (p=%.3g)\n",
			s.By, f.Workers, f.MaxOverMean, f.MinOverMean, f.CoV, f.Jain, f.ChiSquare, f.PValue)
	}
	if s.ForeignAccepts > 0 {
		fmt.Fprintf(w, "\n  %d accepts by processes outside the expected pids %v\n", s.ForeignAccepts, s.Expected)
	}
	if s.Serving != nil {
		printServing(w, s.Serving)
	}
	fmt.Fprintf(w, "\n  %-24s %-10s %-16s %7s %9s %8s\n", "listening socket", "inode", "held by", "queue", "max seen", "backlog")
	for _, k := range s.Sockets {
		var owners []string
		for _, p := range k.Owners {
			owners = append(owners, strconv.Itoa(p))
		}
		mark := ""
		if k.Foreign {
			mark = "  foreign"
		}
		if k.Gone {
			mark += " (gone)"
		}
		fmt.Fprintf(w, "  %-24s %-10d %-16s %7d %9d %8d%s\n", k.Addr, k.Inode, strings.Join(owners, ","), k.Queue, k.MaxQueue, k.Backlog, mark)
	}
	fmt.Fprintf(w, "  Host: ListenOverflows +%d, ListenDrops +%d (every port)\n", s.Kernel["ListenOverflows"], s.Kernel["ListenDrops"])
}

func byAccepts(m map[string]*Count) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int { return cmp.Compare(m[b].Accepts, m[a].Accepts) })
}

// socketOwners maps socket inodes to the processes holding a descriptor
// of them.
func socketOwners() map[uint64][]int {
	out := map[uint64][]int{}
	procs, err := procfs.AllProcs()
	if err != nil {
		return out
	}
	for _, p := range procs {
		targets, err := p.FileDescriptorTargets()
		if err != nil {
			continue
		}
		for _, t := range targets {
			if !strings.HasPrefix(t, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]"), 10, 64)
			if err == nil && !slices.Contains(out[ino], p.PID) {
				out[ino] = append(out[ino], p.PID)
			}
		}
	}
	return out
}

// watchMetrics are the live Prometheus series; a nil *watchMetrics
// records nothing.
type watchMetrics struct {
	reg              *prometheus.Registry
	byPID, byTID     *prometheus.CounterVec
	queues, backlogs *prometheus.GaugeVec
	overflows, drops prometheus.Gauge
	missed           prometheus.Gauge
	serve            *servingMetrics // nil: no serving side
}

func newWatchMetrics(port int, serving bool) *watchMetrics {
	l := prometheus.Labels{"port": strconv.Itoa(port)}
	m := &watchMetrics{
		reg: prometheus.NewRegistry(),
		byPID: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_accepts_total", ConstLabels: l,
			Help: "Connections accepted on the port, by the accepting process (the kernel's view)."}, []string{"pid", "comm"}),
		byTID: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_thread_accepts_total", ConstLabels: l,
			Help: "Connections accepted on the port, by the accepting thread."}, []string{"pid", "tid", "comm"}),
		queues: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lbbench_watch_accept_queue", ConstLabels: l,
			Help: "Accept queue length of each listening socket on the port, once a second."}, []string{"inode", "owners"}),
		backlogs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lbbench_watch_accept_queue_limit", ConstLabels: l,
			Help: "Accept queue limit (backlog) of each listening socket on the port."}, []string{"inode", "owners"}),
		overflows: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lbbench_watch_host_listen_overflows", ConstLabels: l,
			Help: "TcpExt ListenOverflows of the whole host since the watch began."}),
		drops: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lbbench_watch_host_listen_drops", ConstLabels: l,
			Help: "TcpExt ListenDrops of the whole host since the watch began."}),
		missed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lbbench_watch_missed_accepts", ConstLabels: l,
			Help: "Accepts the kernel could not hand over (full ring buffer); the counts are short by this many."}),
	}
	m.reg.MustRegister(m.byPID, m.byTID, m.queues, m.backlogs, m.overflows, m.drops, m.missed)
	if serving {
		m.serve = newServingMetrics(l)
		m.reg.MustRegister(m.serve.byPID, m.serve.byTID, m.serve.bytes, m.serve.handoffs, m.serve.missed)
	}
	return m
}

func (m *watchMetrics) servingMissed(n int64) {
	if m == nil || m.serve == nil {
		return
	}
	m.serve.missed.Set(float64(n))
}

func (m *watchMetrics) observe(ev kattr.Event) {
	if m == nil {
		return
	}
	pid := strconv.Itoa(ev.PID)
	m.byPID.WithLabelValues(pid, ev.Comm).Inc()
	m.byTID.WithLabelValues(pid, strconv.Itoa(ev.TID), ev.Comm).Inc()
}

// socketLabels are a socket's inode and owners, as its metrics name them.
func socketLabels(s *Socket) (inode, owners string) {
	var pids []string
	for _, p := range s.Owners {
		pids = append(pids, strconv.Itoa(p))
	}
	return strconv.FormatUint(s.Inode, 10), strings.Join(pids, ",")
}

func (m *watchMetrics) queue(s *Socket) {
	if m == nil {
		return
	}
	ino, own := socketLabels(s)
	m.queues.WithLabelValues(ino, own).Set(float64(s.Queue))
	m.backlogs.WithLabelValues(ino, own).Set(float64(s.Backlog))
}

func (m *watchMetrics) forget(s *Socket) {
	if m == nil {
		return
	}
	ino, own := socketLabels(s)
	m.queues.DeleteLabelValues(ino, own)
	m.backlogs.DeleteLabelValues(ino, own)
}

func (m *watchMetrics) kernel(before, now map[string]uint64, missed int64) {
	if m == nil {
		return
	}
	m.overflows.Set(float64(now["ListenOverflows"] - before["ListenOverflows"]))
	m.drops.Set(float64(now["ListenDrops"] - before["ListenDrops"]))
	m.missed.Set(float64(missed))
}
