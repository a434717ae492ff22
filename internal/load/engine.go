package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/httpwire"
)

// Result is what one run measured. Histograms hold nanoseconds.
type Result struct {
	Options     Options
	Start       time.Time     // when the measured part began
	Duration    time.Duration // length of the measured part
	Requests    int64         // successful (2xx) responses
	Connections int64         // connections that carried a measured response
	// LocalConnections of LocalityKnown connections were handled on the
	// CPU their packets arrived on (the server's X-Conn-Local header).
	LocalConnections, LocalityKnown int64
	Errors                          map[string]int64
	// PerPID counts what each worker pid served; Unattributed what came
	// without a usable pid (no header, or a value that is not a pid).
	// With kernel attribution the pid is the acceptor's, and PerTID
	// counts by accepting thread.
	PerPID map[uint64]*PIDCount
	PerTID map[uint64]*TIDCount
	// PerWorker counts by the worker id the server names, with FairBy
	// worker (in-process workers, which share a pid).
	PerWorker   map[uint64]*PIDCount
	Attribution *Attribution
	// UDP is what a -proto udp run saw beyond the rest: sends, losses,
	// duplicates, reordering, and whether flows kept their worker.
	UDP *UDPStats
	// TLS counts an https:// run's handshakes (tls_stats.go).
	TLS          *TLSStats
	Unattributed PIDCount
	// BadPIDValues counts responses whose pid header was not a pid;
	// BadPIDExample is one such value.
	BadPIDValues  int64
	BadPIDExample string
	// InFlightAtEnd are the measured requests still unanswered when the
	// run ended (cut, not counted); OldestInFlight is how long the oldest
	// of them had waited.
	InFlightAtEnd  int64
	OldestInFlight time.Duration
	Latency        *hdrhistogram.Histogram // from the intended send time
	Uncorrected    *hdrhistogram.Histogram // from the actual send time
	Connect        *hdrhistogram.Histogram // connect() for new connections
	TTFB           *hdrhistogram.Histogram // request written to first response byte
	Lag            *hdrhistogram.Histogram // actual - intended send time (open loop)
	Series         []Second
	CPUSeconds     float64 // this process's user+system CPU in the measured part
	Interrupted    bool    // stopped early by the caller (Ctrl-C)
}

// TotalErrors sums the errors of every kind.
func (r *Result) TotalErrors() int64 { return sumCounts(r.Errors) }

// sumCounts sums counts by kind.
func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

type engine struct {
	o            Options
	loops        []eventLoop
	sched        *Schedule // nil: closed loop
	measureStart time.Time
	end          time.Time // zero: no duration limit
	tickets      atomic.Int64
	stopped      atomic.Bool
	remote       netip.AddrPort
	tupleRemote  netip.AddrPort // remote as kernel attribution's 4-tuples name it (unmapped)
	// UDP: the target's socket drops when the run began (udp_linux.go).
	targetDropsBefore int64
	targetDropsSeen   bool
	// The remote address in the kernel's layout, for raw connect calls.
	family     int
	remoteSA   unsafe.Pointer
	remoteLen  uintptr
	nextDialer atomic.Uint64
	reqKeep    []byte
	reqClose   []byte
	kernel     bool // attribution by the kernel's record of accepts, sends or both
}

// eventLoop is one of the engine's loops: a TCP loop (loop_linux.go) or
// a UDP one (udp_linux.go), each with its own epoll set and statistics.
type eventLoop interface {
	run()
	poke()
	// closeSet releases the loop's set; the loop must not be poked after.
	closeSet()
	stats() *shard
	// cutCount is what the end of the run cut: requests in flight, and
	// when the oldest of them was sent.
	cutCount() (inFlight int64, oldest time.Time)
}

// Run runs the load o describes. onSecond, if not nil, is called once a
// second with the second that just ended (for progress lines and live
// metrics). Cancelling ctx stops the run early; the result then covers
// what ran.
func Run(ctx context.Context, o Options, onSecond func(Second)) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Attribute != AttrHeader && o.Kernel == nil && o.Serving == nil {
		return nil, fmt.Errorf("-attribute %s: no kernel attribution running", o.Attribute)
	}
	e := &engine{o: o, kernel: o.Attribute != AttrHeader}
	e.buildRequests()
	e.remote = netip.MustParseAddrPort(o.Addr())
	e.family, e.remoteSA, e.remoteLen = rawSockaddr(e.remote)
	// The kernel's events give a v4-mapped address (a URL's
	// [::ffff:127.0.0.1]) unmapped, as the local one is read.
	e.tupleRemote = netip.AddrPortFrom(e.remote.Addr().Unmap(), e.remote.Port())

	start := time.Now()
	e.measureStart = start.Add(o.Warmup)
	if o.Duration > 0 {
		e.end = e.measureStart.Add(o.Duration)
	}
	if o.Rate > 0 {
		e.sched = NewSchedule(start, o.Rate, o.Poisson, o.Seed, e.end, 0)
	}
	// One loop per P, as wrk has a thread per core; connections (or
	// flows) are dealt out in turn.
	if err := e.makeLoops(); err != nil {
		e.stop(nil)
		return nil, err
	}
	allDone, err := e.startLoops()
	if err != nil {
		return nil, err
	}
	shards := e.shards()

	res := &Result{Options: o, Start: e.measureStart}
	merged := NewHistogram()
	// Wait for the warm-up to end, then tick once a second.
	select {
	case <-time.After(time.Until(e.measureStart)):
	case <-ctx.Done():
		res.Interrupted = true
	case <-allDone:
	}
	cpu0 := cpuSeconds()
	series, stopAt := e.measure(ctx, res, allDone, shards, merged, onSecond)
	// The loops cut what is still in flight, counting it, and end.
	e.stop(func() { <-allDone })
	for _, l := range e.loops {
		n, oldest := l.cutCount()
		res.InFlightAtEnd += n
		if oldest.IsZero() {
			continue
		}
		if d := stopAt.Sub(oldest); d > res.OldestInFlight {
			res.OldestInFlight = d
		}
	}
	res.CPUSeconds = cpuSeconds() - cpu0

	if last := tick(shards, stopAt.Sub(e.measureStart).Seconds(), merged, e.o.FairBy); last.Requests > 0 || last.Errors > 0 {
		last.At = stopAt
		series = append(series, last)
		if onSecond != nil {
			onSecond(last)
		}
	}
	res.Series = series
	res.Duration = max(stopAt.Sub(e.measureStart), 0)
	e.collect(res, shards)
	return res, nil
}

// startLoops starts a goroutine per loop, each on a thread in -netns
// when one is named, and returns once every loop runs; allDone closes
// when they have all ended. On an error no loop is left running.
func (e *engine) startLoops() (allDone chan struct{}, err error) {
	o := e.o
	nsfd := -1
	if o.NetNS != "" {
		// The loops open their sockets on threads in the namespace; the
		// rest of the process (metrics, signals) stays where it is.
		if nsfd, err = unix.Open(NetNSPath(o.NetNS), unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			e.stop(nil)
			return nil, fmt.Errorf("-netns %s: %w", o.NetNS, err)
		}
		defer unix.Close(nsfd)
	}
	var workers sync.WaitGroup
	entered := make(chan error, len(e.loops))
	for _, l := range e.loops {
		workers.Go(func() {
			if nsfd >= 0 {
				// Never unlocked: the thread ends with the loop.
				runtime.LockOSThread()
				if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
					entered <- fmt.Errorf("-netns %s: %w", o.NetNS, err)
					return
				}
			}
			entered <- nil
			l.run()
		})
	}
	var enterErr error
	for range e.loops {
		if err := <-entered; err != nil {
			enterErr = err
		}
	}
	if enterErr != nil {
		// Some loops run, some never will: stop the ones that run, then
		// release every set.
		e.stop(workers.Wait)
		return nil, enterErr
	}
	allDone = make(chan struct{})
	go func() { workers.Wait(); close(allDone) }()
	return allDone, nil
}

// measure ticks once a second until the run ends (its end time, its
// loops, or ctx: then res is Interrupted) and returns the seconds and
// when it stopped.
func (e *engine) measure(ctx context.Context, res *Result, allDone chan struct{}, shards []*shard, merged *hdrhistogram.Histogram, onSecond func(Second)) (series []Second, stopAt time.Time) {
	o := e.o
	var endTimer <-chan time.Time
	if !e.end.IsZero() {
		endTimer = time.After(time.Until(e.end))
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	stopAt = time.Now()
	for !res.Interrupted {
		select {
		case now := <-ticker.C:
			if o.Kernel != nil {
				o.Kernel.Drain(10 * time.Second) // other clients' accepts, and those never answered
			}
			if o.Serving != nil {
				o.Serving.Drain(10 * time.Second)
			}
			sec := tick(shards, now.Sub(e.measureStart).Seconds(), merged, o.FairBy)
			sec.At = now
			series = append(series, sec)
			if onSecond != nil {
				onSecond(sec)
			}
		case <-endTimer:
			return series, e.end
		case <-allDone:
			return series, time.Now()
		case <-ctx.Done():
			res.Interrupted = true
			stopAt = time.Now()
		}
	}
	return series, stopAt
}

// stop is the one teardown of a run's loops, whatever stage it ends at:
// the loops are told to stop and woken, waited for (wait; nil when none
// was started), and then every loop's set is released.
func (e *engine) stop(wait func()) {
	e.stopped.Store(true)
	if wait != nil {
		for _, l := range e.loops {
			l.poke()
		}
		wait()
	}
	for _, l := range e.loops {
		l.closeSet()
	}
}

func (e *engine) shards() []*shard {
	out := make([]*shard, len(e.loops))
	for i, l := range e.loops {
		out[i] = l.stats()
	}
	return out
}

// makeLoops makes the engine's loops: one per P at most, connections or
// flows dealt out in turn.
func (e *engine) makeLoops() error {
	if e.o.Proto == ProtoUDP {
		return e.makeUDPLoops()
	}
	n := min(e.o.Conns, runtime.GOMAXPROCS(0))
	if e.o.TLS.Enabled {
		e.makeTLSLoops(n)
		return nil
	}
	for i := range n {
		l, err := newLoop(e)
		if err != nil {
			return err
		}
		for c := i; c < e.o.Conns; c += n {
			l.addSlot(c)
		}
		e.loops = append(e.loops, l)
	}
	return nil
}

// NetNSPath is where a named network namespace is (ip netns add's
// place), or the path itself when given one.
func NetNSPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return "/var/run/netns/" + name
}

// collect merges the shards into res.
func (e *engine) collect(res *Result, shards []*shard) {
	res.Latency, res.Uncorrected, res.Connect = NewHistogram(), NewHistogram(), NewHistogram()
	res.TTFB, res.Lag = NewHistogram(), NewHistogram()
	c := newCounts()
	for _, s := range shards {
		s.mu.Lock()
		res.Latency.Merge(s.latency)
		res.Uncorrected.Merge(s.uncorrected)
		res.Connect.Merge(s.connect)
		res.TTFB.Merge(s.ttfb)
		res.Lag.Merge(s.lag)
		c.add(&s.total)
		if s.badPIDExample != "" {
			res.BadPIDExample = s.badPIDExample
		}
		s.mu.Unlock()
	}
	res.Requests, res.Connections, res.PerPID = c.requests, c.conns, c.pids
	res.Unattributed, res.BadPIDValues = c.unattributed, c.badPID
	if e.o.FairBy == FairWorker {
		res.PerWorker = c.workers
	}
	if e.kernel {
		res.PerTID = c.tids
		a := &Attribution{Mode: e.o.Attribute, Counts: CountsAccepts, AcceptsUntraced: e.o.Kernel == nil,
			Unresolved: c.unresolved, Disagreements: c.disagree, HeaderPerPID: c.header, Examples: c.examples}
		if k := e.o.Kernel; k != nil {
			a.Recorded, a.Missed = k.Recorded(), k.Missed()
		}
		if sv := e.o.Serving; sv != nil {
			a.Counts, a.ServingRecorded, a.ServingMissed = CountsServed, sv.Recorded(), sv.Missed()
			a.UnresolvedResponses, a.Unserved, a.Migrated, a.HandedToThread = c.unresolvedServed, c.unserved, c.migrated, c.handedTID
			a.AcceptorPIDs, a.AcceptorTIDs, a.Handoffs = c.accPIDs, c.accTIDs, c.handoffs
			a.DisagreeingResponses = c.disagreeResp
		}
		res.Attribution = a
	}
	res.LocalConnections, res.LocalityKnown = c.localConns, c.localKnown
	res.UDP = e.mergeUDP()
	res.TLS = e.mergeTLS()
	res.Errors = map[string]int64{}
	for i, k := range ErrorKinds {
		res.Errors[k] = c.errs[i]
	}
}

func (e *engine) buildRequests() {
	base := "GET " + e.o.path + " HTTP/1.1\r\nHost: " + e.o.host + ":" + e.o.port + "\r\nUser-Agent: lbbench-loadgen\r\n"
	e.reqKeep = []byte(base + "\r\n")
	e.reqClose = []byte(base + "Connection: close\r\n\r\n")
}

// source is the local address of the next connection (none: the
// kernel's choice), from -src in turn.
func (e *engine) source() netip.Addr {
	if n := len(e.o.Src); n > 0 {
		return e.o.Src[e.nextDialer.Add(1)%uint64(n)]
	}
	return netip.Addr{}
}

// maxPID is the largest pid Linux hands out (PID_MAX_LIMIT).
const maxPID = 1 << 22

// workerPID reads the worker-pid header: a positive integer no larger
// than any Linux pid. Anything else (including no header) is pid 0,
// unattributed; bad says a value was there but is not a pid.
func workerPID(v []byte) (pid uint64, bad bool) {
	if len(v) == 0 {
		return 0, false
	}
	n, ok := httpwire.ParseUint(v)
	if !ok || n == 0 || n > maxPID {
		return 0, true
	}
	return n, false
}

// classifyBody names the kind of an error met reading a body.
func classifyBody(err error) string {
	if errors.Is(err, httpwire.ErrMalformed) {
		return ErrMalformed
	}
	return classify(err)
}

// classify names the kind of a connect, read or write error. A keep-alive
// connection the server closed before answering counts as reset.
func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrRefused
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return ErrAddrNotAvail
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return ErrTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrReset
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return ErrOther
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
