// Package rundoc is the document of one loadgen run: it turns a
// load.Result into what people and tools read (the JSON document, a
// wrk-style summary, Go benchmark-format lines and a per-second CSV) and
// merges the documents of generators run together. A results folder's
// REPORT.md, made from many runs, is internal/results'.
package rundoc

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lbbench/lbbench/internal/fairness"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
)

// Quantiles summarises a latency histogram in seconds.
type Quantiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func quantiles(h *hdrhistogram.Histogram) Quantiles {
	q := Quantiles{Count: h.TotalCount()}
	if q.Count == 0 {
		return q
	}
	sec := func(ns int64) float64 { return float64(ns) / 1e9 }
	q.Mean = h.Mean() / 1e9
	q.P50 = sec(h.ValueAtQuantile(50))
	q.P90 = sec(h.ValueAtQuantile(90))
	q.P99 = sec(h.ValueAtQuantile(99))
	q.P999 = sec(h.ValueAtQuantile(99.9))
	q.Max = sec(h.Max())
	return q
}

// CDFPoint is one point of a latency distribution.
type CDFPoint struct {
	Quantile float64 `json:"q"`
	Seconds  float64 `json:"seconds"`
}

// cdfQuantiles are spaced like an HDR percentile spectrum: dense in the
// tail.
var cdfQuantiles = []float64{0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 98, 99,
	99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100}

func cdf(h *hdrhistogram.Histogram) []CDFPoint {
	if h.TotalCount() == 0 {
		return nil
	}
	out := make([]CDFPoint, 0, len(cdfQuantiles))
	for _, q := range cdfQuantiles {
		v := h.ValueAtQuantile(q)
		if q == 0 {
			v = h.Min()
		}
		out = append(out, CDFPoint{Quantile: q / 100, Seconds: float64(v) / 1e9})
	}
	return out
}

// SelfCheck says whether loadgen itself may have limited the run.
type SelfCheck struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUUtilization is CPU seconds over (duration x GOMAXPROCS).
	CPUUtilization float64  `json:"cpu_utilization"`
	Cores          int      `json:"cores"`
	RateAchieved   float64  `json:"rate_achieved_ratio,omitempty"` // achieved / -rate
	Bottleneck     bool     `json:"bottleneck"`
	Reasons        []string `json:"reasons,omitempty"`
}

// Locality is the share of connections the server handled on the CPU
// their packets arrived on, as it reported in X-Conn-Local.
type Locality struct {
	Connections int64   `json:"connections"`
	Local       int64   `json:"local"`
	Share       float64 `json:"share"`
}

// Restarts is what the run lost to the target's rolling restarts.
type Restarts struct {
	Strategy string `json:"strategy"`
	// Count is the restarts during the measured part.
	Count            int     `json:"count"`
	FailedPerRestart float64 `json:"failed_per_restart"`
	Refused          int64   `json:"refused"`
	Reset            int64   `json:"reset"`
	Timeout          int64   `json:"timeout"`
	// ResetsPerMillion is resets per million connection attempts.
	ResetsPerMillion float64 `json:"resets_per_million_connections"`
	// P99WithRestart is the p99 of the seconds in which a restart
	// happened; P99Without of the others (0 when there are none).
	P99WithRestart float64 `json:"p99_seconds_with_restart"`
	P99Without     float64 `json:"p99_seconds_without_restart"`
	SecondsWith    int     `json:"seconds_with_restart"`
	// Instants are the restarts, in seconds since the measured part began.
	Instants []float64 `json:"instants"`
}

// RestartEvent is what the target lists at /restarts.
type RestartEvent struct {
	Worker   int   `json:"worker"`
	OldPID   int   `json:"old_pid"`
	NewPID   int   `json:"new_pid"`
	UnixNano int64 `json:"unix_nano"`
}

// AddRestarts fills d.Restarts from the target's restart events.
func (d *Doc) AddRestarts(r *load.Result, strategy string, events []RestartEvent) {
	rs := &Restarts{Strategy: strategy, Refused: r.Errors[load.ErrRefused], Reset: r.Errors[load.ErrReset], Timeout: r.Errors[load.ErrTimeout]}
	start, end := r.Start.UnixNano(), r.Start.Add(r.Duration).UnixNano()
	withRestart := make([]bool, len(r.Series))
	for _, ev := range events {
		if ev.UnixNano < start || ev.UnixNano > end {
			continue
		}
		t := float64(ev.UnixNano-start) / 1e9
		rs.Count++
		rs.Instants = append(rs.Instants, t)
		// Series[i] covers (T[i-1], T[i]].
		for i, s := range r.Series {
			if t <= s.T {
				withRestart[i] = true
				break
			}
		}
	}
	if rs.Count > 0 {
		rs.FailedPerRestart = float64(r.TotalErrors()) / float64(rs.Count)
	}
	if attempts := r.Connections + r.TotalErrors(); attempts > 0 {
		rs.ResetsPerMillion = 1e6 * float64(rs.Reset) / float64(attempts)
	}
	{
		with, without := load.NewHistogram(), load.NewHistogram()
		for i, s := range r.Series {
			h, err := hdrhistogram.Decode(s.Hist)
			if err != nil {
				continue
			}
			if withRestart[i] {
				with.Merge(h)
				rs.SecondsWith++
			} else {
				without.Merge(h)
			}
		}
		if with.TotalCount() > 0 {
			rs.P99WithRestart = float64(with.ValueAtQuantile(99)) / 1e9
		}
		if without.TotalCount() > 0 {
			rs.P99Without = float64(without.ValueAtQuantile(99)) / 1e9
		}
	}
	d.Restarts = rs
}

// Fairness holds the fairness figures of a run.
type Fairness struct {
	Requests    fairness.Figures `json:"requests"`
	Connections fairness.Figures `json:"connections"`
	// PerSecondJain summarises Jain's index over requests per second.
	PerSecondJainMean float64 `json:"per_second_jain_mean"`
	PerSecondJainMin  float64 `json:"per_second_jain_min"`
}

// SecondJSON is one second of the series.
type SecondJSON struct {
	T           float64          `json:"t"`
	Requests    int64            `json:"requests"`
	Connections int64            `json:"connections"`
	Errors      int64            `json:"errors"`
	P50         float64          `json:"p50_seconds"`
	P99         float64          `json:"p99_seconds"`
	Jain        float64          `json:"jain"`
	PerPID      map[string]int64 `json:"per_pid"`
	// Unattributed are this second's responses without a usable pid.
	Unattributed int64 `json:"unattributed,omitempty"`
	// At is when the second ended (wall clock); Histogram its latency
	// histogram (nanoseconds, compressed HdrHistogram encoding).
	At           time.Time        `json:"at"`
	Histogram    string           `json:"histogram,omitempty"`
	ErrorsByKind map[string]int64 `json:"errors_by_kind,omitempty"`
	// PerUnit counts requests by the fairness unit when it is not the
	// process (fair_by thread: tids; worker: worker ids).
	PerUnit map[string]int64 `json:"per_unit,omitempty"`
}

// Unattributed counts responses without a usable worker pid.
type Unattributed struct {
	Requests    int64 `json:"requests"`
	Connections int64 `json:"connections"`
	// InvalidValues had a pid header whose value is not a pid; Example
	// is one of them.
	InvalidValues int64  `json:"invalid_values"`
	Example       string `json:"example,omitempty"`
}

// AttributionDoc says how requests were given to workers: by the
// server's worker-pid header, or by the kernel (the process and thread
// that accepted each connection), or both, cross-checked.
type AttributionDoc struct {
	Mode string `json:"mode"`
	// FairBy is what the fairness figures count as a worker: process
	// (pid) or thread (tid).
	FairBy string `json:"fair_by"`
	// Kernel attribution: accepts read on the watched port, accepts the
	// kernel could not hand over (full ring buffer), and this run's
	// connections whose accept was not seen.
	Recorded   int64 `json:"recorded,omitempty"`
	Missed     int64 `json:"missed"`
	Unresolved int64 `json:"unresolved_connections"`
	// Both: connections the kernel gives to another pid than the header
	// names, the header's own counts, examples.
	Disagreements int64                     `json:"disagreements,omitempty"`
	HeaderPerPID  map[string]*load.PIDCount `json:"header_per_pid,omitempty"`
	Examples      []load.Disagreement       `json:"disagreement_examples,omitempty"`
	// Note says what a disagreement means when every connection was
	// handed over by one acceptor (the single model's supervisor).
	Note string `json:"note,omitempty"`
	// Counts says whom per_pid, per_tid and the fairness figures count:
	// "served" (the thread that sent each response's last byte) or
	// "accepts" (the thread that accepted each connection: a kernel
	// without the serving hook).
	Counts string `json:"counts,omitempty"`
	// AcceptsUntraced: serving attribution alone (loadgen -acceptors=false):
	// accepts were not traced, so there are no acceptors, no handoffs and
	// no accept counts.
	AcceptsUntraced bool `json:"accepts_untraced,omitempty"`
	// Serving attribution: sends read on the watched port and sends the
	// kernel could not hand over; responses whose sender was not found
	// (counted as unattributed); connections that got no response;
	// connections whose responses came from more than one thread.
	ServingRecorded     int64 `json:"serving_recorded,omitempty"`
	ServingMissed       int64 `json:"serving_missed"`
	UnresolvedResponses int64 `json:"unresolved_responses,omitempty"`
	Unserved            int64 `json:"unserved_connections,omitempty"`
	Migrated            int64 `json:"migrated_connections,omitempty"`
	// HandedToThread counts connections whose first response another
	// thread sent than the one that accepted them (the same process or
	// not: HAProxy's thread handoff, a Go runtime's thread change).
	HandedToThread int64 `json:"handed_to_other_thread,omitempty"`
	// DisagreeingResponses (attribution both, serving) counts responses
	// whose header names another pid than the one that sent them.
	DisagreeingResponses int64 `json:"disagreeing_responses,omitempty"`
	// Acceptors count the connections served by who accepted them, and
	// Handoffs how many each accepting process handed to each serving
	// process (the same process included), most first.
	Acceptors *Acceptors `json:"acceptors,omitempty"`
	Handoffs  []Handoff  `json:"handoffs,omitempty"`
	// Incomplete says the kernel dropped events (a full ring buffer):
	// the counts miss what those events would have named.
	Incomplete bool `json:"incomplete,omitempty"`
}

// Acceptors count responses and connections by the process and thread
// that accepted the connection.
type Acceptors struct {
	PerPID map[string]*load.PIDCount `json:"per_pid"`
	PerTID map[string]*load.TIDCount `json:"per_tid"`
}

// Handoff is how many connections one process accepted and another (or
// the same) served.
type Handoff struct {
	AcceptorPID uint64 `json:"acceptor_pid"`
	ServerPID   uint64 `json:"server_pid"`
	Connections int64  `json:"connections"`
}

// InFlight describes the requests cut by the end of the run.
type InFlight struct {
	Requests         int64   `json:"requests"`
	OldestSeconds    float64 `json:"oldest_seconds"`
	HungAfterSeconds float64 `json:"hung_after_seconds"` // waits this long count as a server that stopped answering
}

// Doc is the JSON document of a run.
type Doc struct {
	Name            string                    `json:"name"` // the benchmark name (-name)
	URL             string                    `json:"url"`
	Mode            string                    `json:"conn"`
	Conns           int                       `json:"connections_configured"`
	Rate            float64                   `json:"rate,omitempty"`
	Poisson         bool                      `json:"poisson,omitempty"`
	ReqsPerConn     int                       `json:"reqs_per_conn,omitempty"`
	Src             int                       `json:"source_addresses,omitempty"`
	Requests        int64                     `json:"requests"`
	Errors          int64                     `json:"errors"`
	ErrorsByKind    map[string]int64          `json:"errors_by_kind"`
	Connections     int64                     `json:"connections"`
	DurationSeconds float64                   `json:"duration_seconds"`
	RequestsPerSec  float64                   `json:"requests_per_second"`
	ConnsPerSec     float64                   `json:"connections_per_second"`
	Latency         Quantiles                 `json:"latency_seconds"`
	LatencyCDF      []CDFPoint                `json:"latency_cdf"`
	Uncorrected     Quantiles                 `json:"uncorrected_latency_seconds"`
	Connect         Quantiles                 `json:"connect_seconds"`
	TTFB            Quantiles                 `json:"ttfb_seconds"`
	SendLag         Quantiles                 `json:"send_lag_seconds"`
	PerPID          map[string]*load.PIDCount `json:"per_pid"`
	// PerTID, with kernel attribution, counts by accepting thread.
	PerTID map[string]*load.TIDCount `json:"per_tid,omitempty"`
	// PerWorker, with fair_by worker, counts by the worker id the server
	// sends (in-process workers, which share a pid).
	PerWorker map[string]*load.PIDCount `json:"per_worker,omitempty"`
	// Attribution says who named the workers and how that went.
	Attribution AttributionDoc `json:"attribution"`
	// Unattributed are the responses no worker pid could be given to:
	// no pid header, or a value that is not a pid. They are left out of
	// the fairness figures.
	Unattributed *Unattributed `json:"unattributed,omitempty"`
	// InFlightAtEnd are the measured requests still unanswered when the
	// run ended: cut, not counted in requests or errors.
	InFlightAtEnd InFlight `json:"in_flight_at_end"`
	// Problems say why the run failed (loadgen then exits 1): no
	// successful response, requests left unanswered, nothing measured.
	Problems    []string           `json:"problems,omitempty"`
	Locality    *Locality          `json:"locality,omitempty"`
	Restarts    *Restarts          `json:"restarts,omitempty"`
	Workers     int                `json:"workers"`
	Fairness    Fairness           `json:"fairness"`
	Kernel      kernel.Observation `json:"kernel"`
	Host        kernel.Host        `json:"host"`
	SelfCheck   SelfCheck          `json:"self_check"`
	Interrupted bool               `json:"interrupted"`
	// StartTime is when the measured part began (wall clock); Generator
	// is the loadgen process that ran it.
	StartTime time.Time  `json:"start_time"`
	Generator *Generator `json:"generator,omitempty"`
	// Histograms hold every latency histogram whole (nanoseconds), in
	// HdrHistogram's standard compressed encoding, which HdrHistogram's
	// own tools decode: "latency", "uncorrected", "connect", "ttfb",
	// "send_lag". Merges use them, never the percentiles.
	Histograms map[string]string `json:"histograms"`
	Series     []SecondJSON      `json:"series"`
	// Inputs, in a merged document, are the runs merged (loadgen merge).
	Inputs []Input `json:"inputs,omitempty"`
	// UDP, for -proto udp: sends, losses, duplicates, reordering, and
	// whether each flow kept its worker. Requests are then replies, and a
	// pid's connections the flows it answered first.
	UDP *load.UDPStats `json:"udp,omitempty"`
	// TLS, for https:// runs: handshakes full and resumed, failures by
	// reason; TLSHandshake is the successful handshakes' durations (the
	// whole histogram is Histograms["tls_handshake"]).
	TLS          *TLSDoc    `json:"tls,omitempty"`
	TLSHandshake *Quantiles `json:"tls_handshake_seconds,omitempty"`
}

// TLSDoc is an https:// run's handshakes.
type TLSDoc struct {
	Resume  bool   `json:"resume"`            // -tls-resume: reconnects resumed their sessions
	Version string `json:"version,omitempty"` // -tls-version, if pinned
	load.TLSStats
}

// Generator says where and when a run was made, so runs from several
// hosts can be lined up.
type Generator struct {
	// Run names this run alone (random, drawn when the process starts):
	// a merge refuses a run given twice by it, as generators started
	// together by -start-at can read the same clock to the nanosecond.
	Run      string `json:"run,omitempty"`
	Hostname string `json:"hostname"`
	// StartAt is the -start-at time asked for (zero: start at once);
	// Started is when this process began (its warm-up), by its clock.
	StartAt time.Time `json:"start_at,omitzero"`
	Started time.Time `json:"started"`
}

// histogramNames name Doc.Histograms, in a fixed order.
var histogramNames = []string{"latency", "uncorrected", "connect", "ttfb", "send_lag"}

// tlsHistogram names the handshake histogram, in https:// runs only.
const tlsHistogram = "tls_handshake"

func encode(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}

// Build assembles the document. workers is the number of workers the
// target has (0: as many as answered); those that never answered count
// as zeros in the fairness figures. A worker is what the run's FairBy
// says: a process, an accepting thread (kernel attribution) or a worker
// id the server sends.
func Build(name string, r *load.Result, obs kernel.Observation, host kernel.Host, workers, cores int) *Doc {
	fairBy := r.Options.FairBy
	d := &Doc{
		Name: name,
		URL:  r.Options.URL, Mode: r.Options.Mode, Conns: r.Options.Conns, Rate: r.Options.Rate,
		Poisson: r.Options.Poisson, ReqsPerConn: r.Options.ReqsPerConn, Src: len(r.Options.Src),
		Requests: r.Requests, Errors: r.TotalErrors(), ErrorsByKind: r.Errors, Connections: r.Connections,
		DurationSeconds: r.Duration.Seconds(),
		Latency:         quantiles(r.Latency), LatencyCDF: cdf(r.Latency), Uncorrected: quantiles(r.Uncorrected),
		Connect: quantiles(r.Connect), TTFB: quantiles(r.TTFB), SendLag: quantiles(r.Lag),
		PerPID: map[string]*load.PIDCount{}, Kernel: obs, Host: host, Interrupted: r.Interrupted,
		StartTime: r.Start.UTC(), UDP: r.UDP,
		Histograms: map[string]string{"latency": encode(r.Latency), "uncorrected": encode(r.Uncorrected),
			"connect": encode(r.Connect), "ttfb": encode(r.TTFB), "send_lag": encode(r.Lag)},
	}
	if r.TLS != nil {
		d.TLS = &TLSDoc{Resume: r.Options.TLS.Resume, Version: r.Options.TLS.Version, TLSStats: *r.TLS}
		q := quantiles(r.TLS.Handshake)
		d.TLSHandshake = &q
		d.Histograms[tlsHistogram] = encode(r.TLS.Handshake)
	}
	if r.LocalityKnown > 0 {
		d.Locality = &Locality{Connections: r.LocalityKnown, Local: r.LocalConnections,
			Share: float64(r.LocalConnections) / float64(r.LocalityKnown)}
	}
	if s := r.Duration.Seconds(); s > 0 {
		d.RequestsPerSec = float64(r.Requests) / s
		d.ConnsPerSec = float64(r.Connections) / s
	}
	d.Attribution = attribution(r, fairBy)
	reqs, conns := d.countUnits(r, fairBy)
	d.Workers = max(workers, len(reqs))
	for len(reqs) < d.Workers {
		reqs, conns = append(reqs, 0), append(conns, 0)
	}
	d.Fairness.Requests = fairness.Compute(reqs)
	d.Fairness.Connections = fairness.Compute(conns)
	d.addSeries(r.Series, fairBy)
	if u := r.Unattributed; u.Requests > 0 || u.Connections > 0 {
		d.Unattributed = &Unattributed{Requests: u.Requests, Connections: u.Connections,
			InvalidValues: r.BadPIDValues, Example: r.BadPIDExample}
	}
	d.InFlightAtEnd, d.Problems = inFlight(r)
	d.SelfCheck = selfCheck(r, d, cores)
	return d
}

// countUnits fills the per-pid, per-thread and per-worker tables and
// returns the counts of the units fairBy names, one per unit.
func (d *Doc) countUnits(r *load.Result, fairBy string) (reqs, conns []float64) {
	for _, pid := range sortedPIDs(r.PerPID) {
		pc := r.PerPID[pid]
		d.PerPID[strconv.FormatUint(pid, 10)] = pc
		reqs = append(reqs, float64(pc.Requests))
		conns = append(conns, float64(pc.Connections))
	}
	if len(r.PerTID) > 0 {
		d.PerTID = map[string]*load.TIDCount{}
		var treqs, tconns []float64
		for tid, tc := range r.PerTID {
			d.PerTID[strconv.FormatUint(tid, 10)] = tc
			treqs = append(treqs, float64(tc.Requests))
			tconns = append(tconns, float64(tc.Connections))
		}
		if fairBy == load.FairThread {
			reqs, conns = treqs, tconns
		}
	}
	if fairBy == load.FairWorker {
		d.PerWorker = map[string]*load.PIDCount{}
		reqs, conns = nil, nil
		for w, pc := range r.PerWorker {
			d.PerWorker[strconv.FormatUint(w, 10)] = pc
			reqs = append(reqs, float64(pc.Requests))
			conns = append(conns, float64(pc.Connections))
		}
	}
	return reqs, conns
}

// addSeries adds the per-second series and its fairness figures; a
// second counts d.Workers units, those that served nothing as zeros.
func (d *Doc) addSeries(series []load.Second, fairBy string) {
	d.Fairness.PerSecondJainMin = 1
	var jsum float64
	var jn int
	for _, s := range series {
		sj := SecondJSON{T: s.T, Requests: s.Requests, Connections: s.Connections, Errors: s.Errors,
			P50: s.P50.Seconds(), P99: s.P99.Seconds(), PerPID: map[string]int64{}, Jain: 1,
			At: s.At.UTC(), Histogram: string(s.Hist), ErrorsByKind: s.ErrorKinds}
		if fairBy != load.FairProcess && len(s.PerUnit) > 0 {
			sj.PerUnit = map[string]int64{}
			for u, n := range s.PerUnit {
				sj.PerUnit[strconv.FormatUint(u, 10)] = n
			}
		}
		for pid, n := range s.PerPID {
			if pid == 0 {
				sj.Unattributed = n
				continue
			}
			sj.PerPID[strconv.FormatUint(pid, 10)] = n
		}
		var xs []float64
		for unit, n := range s.PerUnit {
			if unit != 0 || fairBy == load.FairWorker {
				xs = append(xs, float64(n))
			}
		}
		for len(xs) < d.Workers {
			xs = append(xs, 0)
		}
		if s.Requests > 0 {
			sj.Jain = fairness.Compute(xs).Jain
			jsum += sj.Jain
			jn++
			d.Fairness.PerSecondJainMin = min(d.Fairness.PerSecondJainMin, sj.Jain)
		}
		d.Series = append(d.Series, sj)
	}
	if jn > 0 {
		d.Fairness.PerSecondJainMean = jsum / float64(jn)
	}
}

// Units are the counts the fairness figures were computed over: one per
// worker, as fair_by counts workers (processes, accepting threads or
// worker ids).
func (d *Doc) Units() []load.PIDCount {
	var out []load.PIDCount
	switch d.Attribution.FairBy {
	case load.FairThread:
		for _, tc := range d.PerTID {
			out = append(out, load.PIDCount{Requests: tc.Requests, Connections: tc.Connections})
		}
	case load.FairWorker:
		for _, pc := range d.PerWorker {
			out = append(out, *pc)
		}
	default:
		for _, pc := range d.PerPID {
			out = append(out, *pc)
		}
	}
	return out
}

func attribution(r *load.Result, fairBy string) AttributionDoc {
	a := AttributionDoc{Mode: load.AttrHeader, FairBy: fairBy}
	if a.FairBy == "" {
		a.FairBy = "process"
	}
	ra := r.Attribution
	if ra == nil {
		return a
	}
	a.Mode, a.Recorded, a.Missed, a.Unresolved = ra.Mode, ra.Recorded, ra.Missed, ra.Unresolved.Connections
	a.Disagreements, a.Examples = ra.Disagreements, ra.Examples
	if len(ra.HeaderPerPID) > 0 {
		a.HeaderPerPID = map[string]*load.PIDCount{}
		for pid, pc := range ra.HeaderPerPID {
			a.HeaderPerPID[strconv.FormatUint(pid, 10)] = pc
		}
	}
	a.Counts, a.AcceptsUntraced = ra.Counts, ra.AcceptsUntraced
	a.Incomplete = ra.Missed > 0 || ra.ServingMissed > 0
	if ra.Counts == load.CountsServed {
		a.ServingRecorded, a.ServingMissed = ra.ServingRecorded, ra.ServingMissed
		a.UnresolvedResponses, a.Unserved, a.Migrated, a.HandedToThread = ra.UnresolvedResponses, ra.Unserved, ra.Migrated, ra.HandedToThread
		a.DisagreeingResponses = ra.DisagreeingResponses
		if ra.AcceptsUntraced {
			return a
		}
		a.Acceptors = &Acceptors{PerPID: map[string]*load.PIDCount{}, PerTID: map[string]*load.TIDCount{}}
		for pid, pc := range ra.AcceptorPIDs {
			a.Acceptors.PerPID[strconv.FormatUint(pid, 10)] = pc
		}
		for tid, tc := range ra.AcceptorTIDs {
			a.Acceptors.PerTID[strconv.FormatUint(tid, 10)] = tc
		}
		for h, n := range ra.Handoffs {
			a.Handoffs = append(a.Handoffs, Handoff{AcceptorPID: h.Acceptor, ServerPID: h.Server, Connections: n})
		}
		slices.SortFunc(a.Handoffs, func(x, y Handoff) int {
			return cmp.Or(cmp.Compare(y.Connections, x.Connections), cmp.Compare(x.AcceptorPID, y.AcceptorPID), cmp.Compare(x.ServerPID, y.ServerPID))
		})
		return a
	}
	if a.Disagreements > 0 && a.Disagreements == r.Connections && len(r.PerPID) == 1 {
		a.Note = "every connection was accepted by one process and served by others: the acceptor hands connections over " +
			"(as the single model's supervisor does); per_pid counts the acceptor, header_per_pid the workers that served"
	}
	return a
}

// inFlight describes the requests the end of the run cut, and says what
// makes the run a failure: nothing measured, no successful response, or
// requests that had waited far longer than any answered one (twice the
// slowest answer, and at least 1 s or half the run): a server that
// stopped answering.
func inFlight(r *load.Result) (InFlight, []string) {
	hung := max(min(time.Second, r.Duration/2), 2*time.Duration(r.Latency.Max()))
	f := InFlight{Requests: r.InFlightAtEnd, OldestSeconds: r.OldestInFlight.Seconds(), HungAfterSeconds: hung.Seconds()}
	var problems []string
	switch {
	case r.Interrupted && r.Duration == 0:
		problems = append(problems, "interrupted during warm-up: nothing measured")
	case r.Requests == 0:
		problems = append(problems, "no successful response")
	}
	if r.InFlightAtEnd > 0 && r.OldestInFlight >= hung {
		problems = append(problems, fmt.Sprintf("%d request(s) still unanswered when the run ended, the oldest after %s: the server stopped answering",
			r.InFlightAtEnd, fmtDur(r.OldestInFlight.Seconds())))
	}
	return f, problems
}

// selfCheck flags runs that loadgen, not the server, may have limited.
func selfCheck(r *load.Result, d *Doc, cores int) SelfCheck {
	sc := SelfCheck{CPUSeconds: r.CPUSeconds, Cores: cores}
	if s := r.Duration.Seconds(); s > 0 && cores > 0 {
		sc.CPUUtilization = r.CPUSeconds / (s * float64(cores))
	}
	if sc.CPUUtilization > 0.9 {
		sc.Reasons = append(sc.Reasons, "loadgen used "+strconv.Itoa(int(sc.CPUUtilization*100+0.5))+"% of its "+strconv.Itoa(cores)+" CPUs")
	}
	if r.Options.Rate > 0 && r.Duration > 0 {
		sc.RateAchieved = float64(r.Requests+r.TotalErrors()) / r.Duration.Seconds() / r.Options.Rate
		if sc.RateAchieved < 0.95 {
			sc.Reasons = append(sc.Reasons, "sent "+strconv.Itoa(int(sc.RateAchieved*100+0.5))+"% of the requested rate")
		}
		if d.SendLag.P99 > 0.01 {
			sc.Reasons = append(sc.Reasons, "p99 send lag "+fmtDur(d.SendLag.P99)+": requests left later than scheduled")
		}
	}
	if u := r.UDP; u != nil && u.LoadgenSocketDrops > 0 {
		sc.Reasons = append(sc.Reasons, "loadgen's own sockets dropped "+strconv.FormatInt(u.LoadgenSocketDrops, 10)+
			" replies (a full receive buffer): that loss is loadgen's, not the target's")
	}
	sc.Bottleneck = len(sc.Reasons) > 0
	return sc
}

func sortedPIDs(m map[uint64]*load.PIDCount) []uint64 {
	pids := make([]uint64, 0, len(m))
	for p := range m {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids
}

func fmtDur(sec float64) string {
	d := time.Duration(sec * 1e9)
	switch {
	case d >= time.Second:
		return strconv.FormatFloat(sec, 'f', 2, 64) + "s"
	case d >= time.Millisecond:
		return strconv.FormatFloat(sec*1e3, 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(sec*1e6, 'f', 0, 64) + "us"
	}
}
