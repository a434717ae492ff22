package load

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/rawio"
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
	PerPID       map[uint64]*PIDCount
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
	// SecondHists are the per-second latency histograms, aligned with
	// Series, when Options.KeepSecondHistograms is set.
	SecondHists []*hdrhistogram.Histogram
	CPUSeconds  float64 // this process's user+system CPU in the measured part
	Interrupted bool    // stopped early by the caller (Ctrl-C)
}

// TotalErrors sums the errors of every kind.
func (r *Result) TotalErrors() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

type engine struct {
	o            Options
	shards       []*shard
	sched        *Schedule // nil: closed loop
	measureStart time.Time
	end          time.Time // zero: no duration limit
	tickets      atomic.Int64
	stopped      atomic.Bool
	stopCh       chan struct{}
	stopOnce     sync.Once
	live         []atomic.Pointer[os.File]
	clients      []*client
	remote       netip.AddrPort
	nextDialer   atomic.Uint64
	reqKeep      []byte
	reqClose     []byte
}

// Run runs the load o describes. onSecond, if not nil, is called once a
// second with the second that just ended (for progress lines and live
// metrics). Cancelling ctx stops the run early; the result then covers
// what ran.
func Run(ctx context.Context, o Options, onSecond func(Second)) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	e := &engine{o: o, stopCh: make(chan struct{}), live: make([]atomic.Pointer[os.File], o.Conns), clients: make([]*client, o.Conns)}
	nshards := min(o.Conns, 4*runtime.GOMAXPROCS(0))
	for range nshards {
		e.shards = append(e.shards, newShard())
	}
	e.buildRequests()
	e.remote = netip.MustParseAddrPort(o.Addr())

	start := time.Now()
	e.measureStart = start.Add(o.Warmup)
	if o.Duration > 0 {
		e.end = e.measureStart.Add(o.Duration)
	}
	if o.Rate > 0 {
		e.sched = NewSchedule(start, o.Rate, o.Poisson, o.Seed, e.end, 0)
	}

	var workers sync.WaitGroup
	for i := range o.Conns {
		workers.Go(func() { e.worker(i) })
	}
	allDone := make(chan struct{})
	go func() { workers.Wait(); close(allDone) }()

	res := &Result{Options: o, Start: e.measureStart}
	var cpu0 float64
	var series []Second
	merged := NewHistogram()
	// Wait for the warm-up to end, then tick once a second.
	select {
	case <-time.After(time.Until(e.measureStart)):
	case <-ctx.Done():
		res.Interrupted = true
	case <-allDone:
	}
	cpu0 = cpuSeconds()
	var endTimer <-chan time.Time
	if !e.end.IsZero() {
		endTimer = time.After(time.Until(e.end))
	}
	ticker := time.NewTicker(time.Second)
	stopAt := time.Now()
loop:
	for !res.Interrupted {
		select {
		case now := <-ticker.C:
			sec := tick(e.shards, now.Sub(e.measureStart).Seconds(), merged)
			series = append(series, sec)
			if o.KeepSecondHistograms {
				res.SecondHists = append(res.SecondHists, merged.Clone())
			}
			if onSecond != nil {
				onSecond(sec)
			}
		case <-endTimer:
			stopAt = e.end
			break loop
		case <-allDone:
			stopAt = time.Now()
			break loop
		case <-ctx.Done():
			res.Interrupted = true
			stopAt = time.Now()
		}
	}
	ticker.Stop()
	// Requests still waiting now are cut; count them, and how long the
	// oldest had waited, before the deadlines below end them.
	for _, c := range e.clients {
		if c == nil {
			continue
		}
		if t := c.inflight.Load(); t != 0 && t >= e.measureStart.UnixNano() {
			res.InFlightAtEnd++
			res.OldestInFlight = max(res.OldestInFlight, stopAt.Sub(time.Unix(0, t)))
		}
	}
	e.stop()
	// In-flight requests are cut: their connections' deadlines are now.
	for i := range e.live {
		if c := e.live[i].Load(); c != nil {
			c.SetDeadline(time.Now())
		}
	}
	<-allDone
	res.CPUSeconds = cpuSeconds() - cpu0

	if last := tick(e.shards, stopAt.Sub(e.measureStart).Seconds(), merged); last.Requests > 0 || last.Errors > 0 {
		series = append(series, last)
		if o.KeepSecondHistograms {
			res.SecondHists = append(res.SecondHists, merged.Clone())
		}
		if onSecond != nil {
			onSecond(last)
		}
	}
	res.Series = series
	res.Duration = max(stopAt.Sub(e.measureStart), 0)
	e.collect(res)
	return res, nil
}

func (e *engine) stop() {
	e.stopOnce.Do(func() {
		e.stopped.Store(true)
		close(e.stopCh)
	})
}

// collect merges the shards into res.
func (e *engine) collect(res *Result) {
	res.Latency, res.Uncorrected, res.Connect = NewHistogram(), NewHistogram(), NewHistogram()
	res.TTFB, res.Lag = NewHistogram(), NewHistogram()
	c := newCounts()
	for _, s := range e.shards {
		s.mu.Lock()
		res.Latency.Merge(s.latency)
		res.Uncorrected.Merge(s.uncorrected)
		res.Connect.Merge(s.connect)
		res.TTFB.Merge(s.ttfb)
		res.Lag.Merge(s.lag)
		c.add(&s.total)
		s.mu.Unlock()
	}
	res.Requests, res.Connections, res.PerPID = c.requests, c.conns, c.pids
	res.Unattributed, res.BadPIDValues = c.unattributed, c.badPID
	for _, s := range e.shards {
		if s.badPIDExample != "" {
			res.BadPIDExample = s.badPIDExample
		}
	}
	res.LocalConnections, res.LocalityKnown = c.localConns, c.localKnown
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

// dial connects from the next source address in turn.
func (e *engine) dial() (*rawio.Dialed, error) {
	var local netip.Addr
	if n := len(e.o.Src); n > 0 {
		local = e.o.Src[e.nextDialer.Add(1)%uint64(n)]
	}
	return rawio.Dial(local, e.remote, e.o.Timeout)
}

// client is one connection slot: it owns at most one connection at a time.
type client struct {
	e       *engine
	idx     int
	sh      *shard
	conn    *os.File // the socket; nil between connections
	rw      *rawio.Conn
	reqs    int  // requests on this connection so far
	counted bool // this connection was counted for a pid
	buf     []byte
	parser  *httpwire.ResponseParser
	resp    httpwire.Response
	// inflight is the intended time (unix ns) of the request this
	// connection waits on, 0 when none.
	inflight atomic.Int64
}

func (e *engine) worker(i int) {
	c := &client{e: e, idx: i, sh: e.shards[i%len(e.shards)], buf: make([]byte, httpwire.MaxHead+4096),
		parser: httpwire.NewResponseParser(e.o.PIDHeader, e.o.IDHeader, "X-Conn-Local")}
	e.clients[i] = c
	defer c.closeConn()
	var x sample
	for !e.stopped.Load() {
		var intended time.Time
		if e.sched != nil {
			t, ok := e.sched.Next()
			if !ok {
				return
			}
			if d := time.Until(t); d > 0 {
				timer := time.NewTimer(d)
				select {
				case <-timer.C:
				case <-e.stopCh:
					timer.Stop()
					return
				}
			}
			intended = t
		} else {
			intended = time.Now()
			if !e.end.IsZero() && !intended.Before(e.end) {
				return
			}
		}
		if e.o.Requests > 0 && !intended.Before(e.measureStart) && e.tickets.Add(1) > e.o.Requests {
			return
		}
		c.inflight.Store(intended.UnixNano())
		c.do(intended, &x)
		c.inflight.Store(0)
		if e.stopped.Load() {
			return // cut by the end of the run: not a result
		}
		done := time.Now()
		if intended.Before(e.measureStart) || (!e.end.IsZero() && done.After(e.end)) {
			continue
		}
		c.sh.record(&x)
		if x.err == "" {
			c.counted = true
		}
		if x.err == "" && e.o.Observe != nil {
			e.o.Observe(x.latency.Seconds())
		}
		if e.sched == nil && (x.err == ErrRefused || x.err == ErrAddrNotAvail) {
			time.Sleep(time.Millisecond) // a dead target: do not spin
		}
	}
}

func (c *client) closeConn() {
	if c.conn != nil {
		c.e.live[c.idx].Store(nil)
		c.conn.Close()
		c.conn, c.rw = nil, nil
	}
}

// do sends one request and fills x.
func (c *client) do(intended time.Time, x *sample) {
	e := c.e
	*x = sample{}
	start := time.Now()
	if c.conn == nil {
		d, err := e.dial()
		if err != nil {
			x.err = classify(err)
			return
		}
		x.connect = time.Since(start)
		c.conn, c.rw, c.reqs, c.counted = d.File, d.Conn, 0, false
		e.live[c.idx].Store(d.File)
		if e.stopped.Load() {
			d.File.SetDeadline(time.Now())
		}
	}
	closeAfter := e.o.Mode == ModeClose || (e.o.ReqsPerConn > 0 && c.reqs+1 >= e.o.ReqsPerConn)
	req := e.reqKeep
	if closeAfter {
		req = e.reqClose
	}
	c.conn.SetDeadline(start.Add(e.o.Timeout))
	sent := time.Now()
	if err := c.rw.Write(req); err != nil {
		x.err = classify(err)
		c.closeConn()
		return
	}
	first, filled, head, kind := c.readHead()
	if kind != "" {
		x.err = kind
		c.closeConn()
		return
	}
	// The pid and worker id alias the buffer: take them before reading
	// the body into it.
	x.pid, x.badPID = workerPID(c.resp.Values[0])
	if x.badPID {
		x.bad = append(x.bad[:0], c.resp.Values[0]...)
	}
	x.local = -1
	if !c.counted && !x.badPID {
		if len(c.resp.Values[1]) > 0 {
			x.worker = append(x.worker[:0], c.resp.Values[1]...)
		}
		if v := c.resp.Values[2]; len(v) == 1 && (v[0] == '0' || v[0] == '1') {
			x.local = int8(v[0] - '0')
		}
	}
	if err := c.skipBody(head, filled); err != nil {
		x.err = classifyBody(err)
		c.closeConn()
		return
	}
	done := time.Now()
	c.reqs++
	if c.resp.Close || closeAfter {
		c.closeConn()
	}
	if c.resp.Status < 200 || c.resp.Status > 299 {
		x.err = ErrStatus
		return
	}
	x.newConn = !c.counted // the worker sets counted once it records this
	x.latency = done.Sub(intended)
	x.uncorrected = done.Sub(start)
	x.ttfb = first.Sub(sent)
	if e.sched != nil {
		x.lag = start.Sub(intended)
	}
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

// readHead reads until a final response head is in the buffer, skipping
// interim responses (100 Continue). It returns when the first byte came,
// how much of the buffer is filled and where the head ends, or an error
// kind. Bytes that cannot be HTTP/1.x, or a close after part of a head,
// are malformed; a close before any byte is a reset.
func (c *client) readHead() (first time.Time, filled, head int, kind string) {
	for {
		if filled > 0 {
			h, err := c.parser.Parse(c.buf[:filled], false, &c.resp)
			if err != nil {
				return first, filled, 0, ErrMalformed
			}
			if h > 0 && c.resp.Interim() {
				copy(c.buf, c.buf[h:filled])
				filled -= h
				continue
			}
			if h > 0 {
				return first, filled, h, ""
			}
			if filled == len(c.buf) {
				return first, filled, 0, ErrMalformed
			}
		}
		n, err := c.rw.Read(c.buf[filled:])
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		filled += n
		if err != nil {
			if filled > 0 && errors.Is(err, io.EOF) {
				return first, filled, 0, ErrMalformed // closed mid-head
			}
			return first, filled, 0, classify(err)
		}
	}
}

// skipBody reads the rest of the body, which begins at head in the
// buffer filled up to filled: Content-Length bytes, chunks, or all up to
// the close.
func (c *client) skipBody(head, filled int) error {
	if c.resp.Chunked {
		var ch httpwire.Chunked
		p := c.buf[head:filled]
		for {
			n, done, err := ch.Feed(p)
			if err != nil {
				return err
			}
			if done {
				if n < len(p) {
					// Bytes after the body that no request asked for.
					c.resp.Close = true
				}
				return nil
			}
			k, err := c.rw.Read(c.buf)
			if err != nil {
				return err
			}
			p = c.buf[:k]
		}
	}
	have, want := filled-head, c.resp.BodyLen
	for want < 0 || int64(have) < want {
		n, err := c.rw.Read(c.buf)
		have += n
		if err != nil {
			if want < 0 && err == io.EOF {
				return nil
			}
			return err
		}
	}
	return nil
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
