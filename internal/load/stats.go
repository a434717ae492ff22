package load

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/lbbench/lbbench/internal/kattr"
)

// Error kinds, as the summary and JSON name them.
const (
	ErrRefused      = "refused"      // ECONNREFUSED
	ErrReset        = "reset"        // ECONNRESET, EPIPE, or closed before a response
	ErrTimeout      = "timeout"      // connect or response took longer than -timeout
	ErrAddrNotAvail = "addrnotavail" // EADDRNOTAVAIL: out of local ports for a source address
	ErrStatus       = "status"       // a response that is not 2xx
	ErrMalformed    = "malformed"    // a response that is not HTTP/1.x
	ErrTLS          = "tls"          // a failed TLS handshake (reasons: TLSStats)
	ErrOther        = "other"
)

// ErrorKinds lists the error kinds in report order (UDP's: udp_linux.go).
var ErrorKinds = []string{ErrRefused, ErrReset, ErrTimeout, ErrAddrNotAvail, ErrStatus, ErrMalformed, ErrTLS, ErrLost, ErrSendFailed, ErrOther}

const numKinds = 10

func kindIndex(k string) int {
	for i, x := range ErrorKinds {
		if x == k {
			return i
		}
	}
	return numKinds - 1
}

// Histogram range: 1 µs to 100 s at 3 significant digits, in nanoseconds.
const (
	histLowest  = 1000
	histHighest = 100e9
	histDigits  = 3
)

// NewHistogram returns an HDR histogram of nanoseconds on the range every
// latency histogram of a run uses (so they merge).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// PIDCount counts what one worker process served.
type PIDCount struct {
	Requests    int64  `json:"requests"`
	Connections int64  `json:"connections"`
	Worker      string `json:"worker,omitempty"` // X-Worker-Id, when sent
}

// counts is what a shard and a second both hold.
type counts struct {
	requests, conns int64
	// localConns and localKnown count connections whose server said
	// whether they are handled on the CPU their packets arrive on.
	localConns, localKnown int64
	errs                   [numKinds]int64
	pids                   map[uint64]*PIDCount
	// unattributed counts responses without a usable pid; badPID those
	// whose pid header held something that is not a pid.
	unattributed PIDCount
	badPID       int64
	// Kernel attribution: by accepting thread, connections with no
	// accept found, and (attribution both) the header's own counts and
	// where the two disagree.
	tids map[uint64]*TIDCount
	// workers counts by the worker id the server names (X-Worker-Id),
	// for in-process workers that share a pid (fair-by worker).
	workers    map[uint64]*PIDCount
	unresolved PIDCount
	header     map[uint64]*PIDCount
	disagree   int64
	examples   []Disagreement
	// Serving attribution: the acceptors of the connections served,
	// acceptor -> server pid pairs, responses with no sender found,
	// connections that got no response, and ones that moved thread.
	accPIDs            map[uint64]*PIDCount
	accTIDs            map[uint64]*TIDCount
	handoffs           map[Handoff]int64
	unresolvedServed   int64
	unserved, migrated int64
	handedTID          int64 // connections served by another thread than their acceptor
	disagreeResp       int64 // responses whose header pid is not their sender's
}

func newCounts() counts {
	return counts{pids: map[uint64]*PIDCount{}, tids: map[uint64]*TIDCount{}, header: map[uint64]*PIDCount{}, workers: map[uint64]*PIDCount{},
		accPIDs: map[uint64]*PIDCount{}, accTIDs: map[uint64]*TIDCount{}, handoffs: map[Handoff]int64{}}
}

// tid adds a response (and a connection, if conns is 1) to m[t].
func addTID(m map[uint64]*TIDCount, t kattr.Thread, conns int64) {
	tc := m[uint64(t.TID)]
	if tc == nil {
		tc = &TIDCount{PID: uint64(t.PID), Comm: t.Comm}
		m[uint64(t.TID)] = tc
	}
	tc.Requests++
	tc.Connections += conns
}

// sumTIDs adds o's counts into m.
func sumTIDs(m, o map[uint64]*TIDCount) {
	for t, tc := range o {
		x := m[t]
		if x == nil {
			x = &TIDCount{PID: tc.PID, Comm: tc.Comm}
			m[t] = x
		}
		x.Requests += tc.Requests
		x.Connections += tc.Connections
	}
}

// addTo adds a response (and a connection, if conns is 1) to m[k].
func addTo(m map[uint64]*PIDCount, k uint64, conns int64) *PIDCount {
	pc := m[k]
	if pc == nil {
		pc = &PIDCount{}
		m[k] = pc
	}
	pc.Requests++
	pc.Connections += conns
	return pc
}

// sum adds o's counts into m.
func sum(m, o map[uint64]*PIDCount) {
	for k, pc := range o {
		x := m[k]
		if x == nil {
			x = &PIDCount{}
			m[k] = x
		}
		x.Requests += pc.Requests
		x.Connections += pc.Connections
		if pc.Worker != "" {
			x.Worker = pc.Worker
		}
	}
}

func (c *counts) pid(p uint64) *PIDCount {
	pc := c.pids[p]
	if pc == nil {
		pc = &PIDCount{}
		c.pids[p] = pc
	}
	return pc
}

func (c *counts) add(o *counts) {
	c.requests += o.requests
	c.conns += o.conns
	c.localConns += o.localConns
	c.localKnown += o.localKnown
	for i := range c.errs {
		c.errs[i] += o.errs[i]
	}
	c.unattributed.Requests += o.unattributed.Requests
	c.unattributed.Connections += o.unattributed.Connections
	c.badPID += o.badPID
	sumTIDs(c.tids, o.tids)
	sumTIDs(c.accTIDs, o.accTIDs)
	sum(c.accPIDs, o.accPIDs)
	for h, n := range o.handoffs {
		c.handoffs[h] += n
	}
	c.unresolvedServed += o.unresolvedServed
	c.unserved += o.unserved
	c.migrated += o.migrated
	c.handedTID += o.handedTID
	c.disagreeResp += o.disagreeResp
	c.unresolved.Requests += o.unresolved.Requests
	c.unresolved.Connections += o.unresolved.Connections
	sum(c.header, o.header)
	sum(c.workers, o.workers)
	c.disagree += o.disagree
	for _, ex := range o.examples {
		if len(c.examples) < maxExamples {
			c.examples = append(c.examples, ex)
		}
	}
	sum(c.pids, o.pids)
}

// shard holds the statistics of a group of connections. Connections are
// spread over a few shards, each behind its own mutex, so the hot path
// is one uncontended lock and a few array increments, and memory does
// not grow with the connection count or the run length.
type shard struct {
	mu                            sync.Mutex
	latency, uncorrected, connect *hdrhistogram.Histogram
	ttfb, lag                     *hdrhistogram.Histogram
	second                        *hdrhistogram.Histogram // latency since the last tick
	total, sec                    counts
	badPIDExample                 string
}

func newShard() *shard {
	return &shard{
		latency: NewHistogram(), uncorrected: NewHistogram(), connect: NewHistogram(),
		ttfb: NewHistogram(), lag: NewHistogram(), second: NewHistogram(),
		total: newCounts(), sec: newCounts(),
	}
}

// sample is one finished request as a connection saw it.
type sample struct {
	err    string // "" when the request succeeded
	pid    uint64 // 0: unattributed
	badPID bool   // the pid header held something that is not a pid
	// acc is the connection's acceptor (kernel attribution), client its
	// address for examples.
	acc         *acceptor
	srv         served // who sent the response, when serving is set
	serving     bool
	unserved    bool // a failure that ends a connection that got no response
	client      string
	bad         []byte // ... that value
	worker      []byte
	workerID    uint64        // worker+1 when it is a number, else 0
	newConn     bool          // first measured response on this connection
	local       int8          // X-Conn-Local: 1, 0, or -1 when not sent
	latency     time.Duration // from the intended time (open loop) or the start
	uncorrected time.Duration // from when the request actually started
	connect     time.Duration // 0 when the connection was reused
	ttfb        time.Duration
	lag         time.Duration // actual start - intended start (open loop)
}

func (s *shard) record(x *sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x.err != "" {
		k := kindIndex(x.err)
		s.total.errs[k]++
		s.sec.errs[k]++
		if x.unserved {
			s.total.unserved++
			s.sec.unserved++
		}
		return
	}
	s.latency.RecordValue(int64(x.latency))
	s.second.RecordValue(int64(x.latency))
	s.uncorrected.RecordValue(int64(x.uncorrected))
	s.ttfb.RecordValue(int64(x.ttfb))
	if x.connect > 0 {
		s.connect.RecordValue(int64(x.connect))
	}
	if x.lag > 0 {
		s.lag.RecordValue(int64(x.lag))
	}
	s.total.requests++
	s.sec.requests++
	if x.newConn && x.local >= 0 {
		s.total.localKnown++
		s.total.localConns += int64(x.local)
	}
	if x.acc != nil {
		s.recordKernel(x)
		return
	}
	var tp, sp *PIDCount
	if x.pid == 0 {
		tp, sp = &s.total.unattributed, &s.sec.unattributed
		if x.badPID {
			s.total.badPID++
			if s.badPIDExample == "" {
				s.badPIDExample = string(x.bad)
			}
		}
	} else {
		tp, sp = s.total.pid(x.pid), s.sec.pid(x.pid)
	}
	conns := int64(0)
	if x.newConn {
		conns = 1
		s.total.conns++
		s.sec.conns++
	}
	tp.Requests++
	sp.Requests++
	tp.Connections += conns
	sp.Connections += conns
	if tp.Worker == "" && len(x.worker) > 0 {
		tp.Worker = string(x.worker)
	}
	if x.workerID > 0 {
		addTo(s.total.workers, x.workerID-1, conns)
		addTo(s.sec.workers, x.workerID-1, conns)
	}
}

// recordErr counts a failed connection attempt.
func (s *shard) recordErr(kind string) { s.record(&sample{err: kind}) }

// recordKernel counts a response by the thread the kernel saw send it
// (or, without serving attribution, accept its connection), and in
// attribution both checks it against the header's pid. s.mu is held.
func (s *shard) recordKernel(x *sample) {
	conns := int64(0)
	if x.newConn {
		conns = 1
		s.total.conns++
		s.sec.conns++
	}
	who, known := x.acc.Acceptor, x.acc.known
	if x.serving {
		who, known = x.srv.Thread, x.srv.known
	}
	for _, c := range []*counts{&s.total, &s.sec} {
		if x.workerID > 0 { // fair-by worker: the header's worker id
			addTo(c.workers, x.workerID-1, conns)
		}
		if x.acc.traced && !x.acc.known {
			c.unresolved.Requests++
			c.unresolved.Connections += conns
		}
		if x.serving {
			c.recordServing(x, conns)
		}
		if !known {
			c.unattributed.Requests++
			c.unattributed.Connections += conns
			continue
		}
		addTo(c.pids, uint64(who.PID), conns)
		addTID(c.tids, who, conns)
		if x.pid != 0 { // attribution both: the header's view
			addTo(c.header, x.pid, conns)
			if x.serving && x.pid != uint64(who.PID) {
				c.disagreeResp++
			}
			if conns > 0 && x.pid != uint64(who.PID) {
				c.disagree++
				if len(c.examples) < maxExamples {
					c.examples = append(c.examples, Disagreement{Client: x.client, KernelPID: uint64(who.PID), KernelTID: uint64(who.TID), HeaderPID: x.pid})
				}
			}
		}
	}
}

// recordServing counts who accepted the response's connection, the
// handoff from acceptor to server, and what serving attribution could
// not name.
func (c *counts) recordServing(x *sample, conns int64) {
	if !x.srv.known {
		c.unresolvedServed++
	}
	if x.srv.migrated {
		c.migrated++
	}
	if !x.acc.known {
		return
	}
	addTo(c.accPIDs, uint64(x.acc.PID), conns)
	addTID(c.accTIDs, x.acc.Acceptor, conns)
	if conns > 0 && x.srv.known {
		c.handoffs[Handoff{uint64(x.acc.PID), uint64(x.srv.PID)}]++
		if x.srv.TID != x.acc.TID {
			c.handedTID++
		}
	}
}

// Second is one second of a run.
type Second struct {
	// T is seconds since the measured part began (end of this second);
	// At is the wall-clock time it ended.
	T           float64
	At          time.Time
	Requests    int64
	Connections int64
	Errors      int64
	P50, P99    time.Duration
	PerPID      map[uint64]int64 // requests per worker pid (0: unattributed)
	PerPIDConns map[uint64]int64 // new connections per worker pid (0: unattributed)
	// PerUnit counts requests by what the fairness figures count as a
	// worker (Options.FairBy): a pid, a tid or a worker id.
	PerUnit    map[uint64]int64
	ErrorKinds map[string]int64
	// Hist is the second's latency histogram in HdrHistogram's
	// compressed encoding (base64), kept whole for exact merges and the
	// interval log.
	Hist []byte
}

// tick moves the per-second counts of every shard into one Second.
func tick(shards []*shard, t float64, merged *hdrhistogram.Histogram, fairBy string) Second {
	merged.Reset()
	c := newCounts()
	for _, s := range shards {
		s.mu.Lock()
		merged.Merge(s.second)
		s.second.Reset()
		c.add(&s.sec)
		s.sec = newCounts()
		s.mu.Unlock()
	}

	sec := Second{T: t, Requests: c.requests, Connections: c.conns, PerPID: map[uint64]int64{},
		PerPIDConns: map[uint64]int64{}, ErrorKinds: map[string]int64{}}
	for i, e := range c.errs {
		sec.Errors += e
		if e > 0 {
			sec.ErrorKinds[ErrorKinds[i]] = e
		}
	}
	for p, pc := range c.pids {
		sec.PerPID[p] = pc.Requests
		sec.PerPIDConns[p] = pc.Connections
	}
	if u := c.unattributed; u.Requests > 0 {
		sec.PerPID[0], sec.PerPIDConns[0] = u.Requests, u.Connections
	}
	sec.PerUnit = sec.PerPID
	switch fairBy {
	case FairThread:
		sec.PerUnit = map[uint64]int64{}
		for t, tc := range c.tids {
			sec.PerUnit[t] = tc.Requests
		}
	case FairWorker:
		sec.PerUnit = map[uint64]int64{}
		for w, pc := range c.workers {
			sec.PerUnit[w] = pc.Requests
		}
	}
	if merged.TotalCount() > 0 {
		sec.P50 = time.Duration(merged.ValueAtQuantile(50))
		sec.P99 = time.Duration(merged.ValueAtQuantile(99))
	}
	sec.Hist, _ = merged.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	return sec
}
