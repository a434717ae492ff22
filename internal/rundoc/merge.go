package rundoc

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lbbench/lbbench/internal/load"
)

// ErrDuplicate is a run given to Merge twice, which would count it twice.
var ErrDuplicate = errors.New("a run is merged once")

// Input is one run of a merged document, so that a slow or failing
// generator shows.
type Input struct {
	File           string    `json:"file"`
	Hostname       string    `json:"hostname"`
	Started        time.Time `json:"started"`
	Requests       int64     `json:"requests"`
	Errors         int64     `json:"errors"`
	RequestsPerSec float64   `json:"requests_per_second"`
	P99            float64   `json:"p99_seconds"`
	Bottleneck     bool      `json:"loadgen_bottleneck"`
	// Runs are the ids of the runs the input holds: its own, or, for a
	// merged document, those of its inputs (so a merge of it with one
	// of them is refused).
	Runs []string `json:"runs,omitempty"`
}

// Merge makes one document of runs made at the same time against the
// same target by several load generators: counts summed, histograms
// merged whole (percentiles are computed from the merged histograms,
// never averaged), fairness recomputed from the summed counts, the
// per-second series lined up by wall clock. The duration is the span
// from the earliest start to the latest end. Runs against different
// targets, in different modes, attributed differently or with other
// histogram settings are refused. files name the inputs.
func Merge(name string, docs []*Doc, files []string) (*Doc, error) {
	if len(docs) == 0 {
		return nil, errors.New("merge: no runs")
	}
	m := newMerger(docs[0], files[0])
	for i, d := range docs {
		if err := m.add(d, files[i]); err != nil {
			return nil, err
		}
	}
	r := m.r
	r.Latency, r.Uncorrected, r.Connect, r.TTFB, r.Lag = m.hists["latency"], m.hists["uncorrected"], m.hists["connect"], m.hists["ttfb"], m.hists["send_lag"]
	if err := overlapping(docs, files); err != nil {
		return nil, err
	}
	r.Duration = m.end.Sub(r.Start)
	if m.attr.Mode != "" {
		r.Attribution = &m.attr
	}
	var err error
	if r.Series, err = mergeSeries(docs, r.Start); err != nil {
		return nil, err
	}
	d := Build(name, r, m.first.Kernel, m.first.Host, m.workers, m.cores)
	d.Inputs = m.inputs
	// One generator that could not send limits the merged sample too,
	// even where the others' spare CPU hides it in the sums.
	for i, g := range docs {
		if g.SelfCheck.Bottleneck {
			d.SelfCheck.Bottleneck = true
			d.SelfCheck.Reasons = append(d.SelfCheck.Reasons, "generator "+filepath.Base(files[i])+": "+strings.Join(g.SelfCheck.Reasons, ", "))
		}
	}
	return d, nil
}

// merger sums the runs of a Merge into one load.Result, run by run.
type merger struct {
	first     *Doc
	firstFile string
	r         *load.Result
	hists     map[string]*hdrhistogram.Histogram
	end       time.Time
	attr      load.Attribution
	workers   int
	cores     int
	inputs    []Input
	seen      map[string]string // start time (and host) -> file
}

func newMerger(first *Doc, file string) *merger {
	r := &load.Result{
		Options: load.Options{URL: first.URL, Mode: first.Mode, Poisson: first.Poisson, ReqsPerConn: first.ReqsPerConn,
			Attribute: first.Attribution.Mode, FairBy: first.Attribution.FairBy},
		Errors: map[string]int64{}, PerPID: map[uint64]*load.PIDCount{},
	}
	if r.Options.FairBy == "" {
		r.Options.FairBy = load.FairProcess
	}
	return &merger{first: first, firstFile: file, r: r, hists: map[string]*hdrhistogram.Histogram{}, seen: map[string]string{}}
}

// add checks that d, read from file, may join the merge and adds it.
func (m *merger) add(d *Doc, file string) error {
	if !looksLikeResult(d) {
		return fmt.Errorf("merge: %s: not a loadgen result (it names no url)", file)
	}
	if err := compatible(m.first, d); err != nil {
		return fmt.Errorf("merge: %s: %v", file, err)
	}
	for _, n := range histogramNames {
		h, err := decode(d.Histograms[n])
		if err != nil {
			return fmt.Errorf("merge: %s: histogram %s: %v", file, n, err)
		}
		if m.hists[n] == nil {
			m.hists[n] = h
			continue
		}
		if !sameGeometry(m.hists[n], h) {
			return fmt.Errorf("merge: %s: histogram %s has other settings (range, precision) than %s's", file, n, m.firstFile)
		}
		m.hists[n].Merge(h)
	}
	// A run's id names it alone; a document from before ids were drawn
	// is named by its start and host (equal only for one run read twice,
	// or for generators that read the clock at the same nanosecond).
	runs := runsOf(d)
	keys := make([]string, 0, len(runs))
	for _, r := range runs {
		keys = append(keys, "run "+r)
	}
	if len(keys) == 0 {
		key := d.StartTime.UTC().Format(time.RFC3339Nano)
		if d.Generator != nil {
			key += " " + d.Generator.Hostname
		}
		keys = append(keys, key)
	}
	for _, key := range keys {
		if prev, ok := m.seen[key]; ok {
			why := "same start time " + d.StartTime.UTC().Format(time.RFC3339Nano)
			if r, ok := strings.CutPrefix(key, "run "); ok {
				why = "both hold run " + r
			}
			return fmt.Errorf("merge: %s is the same run as %s (%s): %w", file, prev, why, ErrDuplicate)
		}
	}
	for _, key := range keys {
		m.seen[key] = file
	}
	if err := m.addCounts(d, file); err != nil {
		return err
	}
	m.addRun(d, file)
	return nil
}

// addCounts adds d's counts: load, protocol sections, per pid, thread
// and worker, what was left unattributed and how attribution went.
func (m *merger) addCounts(d *Doc, file string) error {
	r := m.r
	r.Options.Conns += d.Conns
	r.Options.Rate += d.Rate
	if d.UDP != nil {
		if r.UDP == nil {
			r.UDP = &load.UDPStats{}
			r.Options.Proto = load.ProtoUDP
		}
		r.UDP.Add(d.UDP)
		r.Options.Flows += d.UDP.Flows
	}
	if d.TLS != nil {
		h, err := decode(d.Histograms[tlsHistogram])
		if err != nil {
			return fmt.Errorf("merge: %s: histogram %s: %v", file, tlsHistogram, err)
		}
		if r.TLS == nil {
			r.TLS = load.NewTLSStats()
			r.Options.TLS.Enabled, r.Options.TLS.Resume, r.Options.TLS.Version = true, d.TLS.Resume, d.TLS.Version
		}
		t := d.TLS.TLSStats
		t.Handshake = h
		r.TLS.Add(&t)
	}
	r.Requests += d.Requests
	r.Connections += d.Connections
	for k, n := range d.ErrorsByKind {
		r.Errors[k] += n
	}
	if err := sumCounts(r.PerPID, d.PerPID); err != nil {
		return fmt.Errorf("merge: %s: %v", file, err)
	}
	if len(d.PerTID) > 0 {
		if r.PerTID == nil {
			r.PerTID = map[uint64]*load.TIDCount{}
		}
		if err := sumTIDCounts(r.PerTID, d.PerTID); err != nil {
			return fmt.Errorf("merge: %s: %v", file, err)
		}
	}
	if len(d.PerWorker) > 0 {
		if r.PerWorker == nil {
			r.PerWorker = map[uint64]*load.PIDCount{}
		}
		if err := sumCounts(r.PerWorker, d.PerWorker); err != nil {
			return fmt.Errorf("merge: %s: %v", file, err)
		}
	}
	if u := d.Unattributed; u != nil {
		r.Unattributed.Requests += u.Requests
		r.Unattributed.Connections += u.Connections
		r.BadPIDValues += u.InvalidValues
		if r.BadPIDExample == "" {
			r.BadPIDExample = u.Example
		}
	}
	if a := d.Attribution; a.Mode != load.AttrHeader && a.Mode != "" {
		attr := &m.attr
		attr.Mode = a.Mode
		attr.Recorded += a.Recorded
		attr.Missed += a.Missed
		attr.Unresolved.Connections += a.Unresolved
		attr.Disagreements += a.Disagreements
		attr.Examples = append(attr.Examples, a.Examples...)
		if err := addServing(attr, a); err != nil {
			return fmt.Errorf("merge: %s: %v", file, err)
		}
	}
	return nil
}

// addRun adds what d says of its run as a whole: when it ran, what was
// in flight at its end, the generator's CPU, and d as an input.
func (m *merger) addRun(d *Doc, file string) {
	r := m.r
	r.InFlightAtEnd += d.InFlightAtEnd.Requests
	r.OldestInFlight = max(r.OldestInFlight, time.Duration(d.InFlightAtEnd.OldestSeconds*1e9))
	r.CPUSeconds += d.SelfCheck.CPUSeconds
	r.Interrupted = r.Interrupted || d.Interrupted
	r.LocalityKnown, r.LocalConnections = r.LocalityKnown+localityOf(d).Connections, r.LocalConnections+localityOf(d).Local
	if r.Start.IsZero() || d.StartTime.Before(r.Start) {
		r.Start = d.StartTime
	}
	if e := d.StartTime.Add(time.Duration(d.DurationSeconds * 1e9)); e.After(m.end) {
		m.end = e
	}
	m.workers = max(m.workers, d.Workers)
	m.cores += d.SelfCheck.Cores
	in := Input{File: file, Started: d.StartTime, Requests: d.Requests, Errors: d.Errors,
		RequestsPerSec: d.RequestsPerSec, P99: d.Latency.P99, Bottleneck: d.SelfCheck.Bottleneck}
	if d.Generator != nil {
		in.Hostname = d.Generator.Hostname
	}
	in.Runs = runsOf(d)
	m.inputs = append(m.inputs, in)
}

// runsOf lists the ids of the runs d holds: its own, or its inputs'
// when it is a merge (none for documents from before ids were drawn).
func runsOf(d *Doc) []string {
	var runs []string
	for _, in := range d.Inputs {
		runs = append(runs, in.Runs...)
	}
	if len(d.Inputs) == 0 && d.Generator != nil && d.Generator.Run != "" {
		runs = append(runs, d.Generator.Run)
	}
	return runs
}

// looksLikeResult says whether d came from a loadgen -json file at all,
// rather than some other JSON object (every field then reads as zero).
func looksLikeResult(d *Doc) bool {
	return d.URL != ""
}

// compatible says why b cannot be merged with a, if it cannot: the
// runs must be parts of one load, so every setting that shapes the load
// (not just its size) must agree, and the message names the one that
// differs.
func compatible(a, b *Doc) error {
	switch {
	case b.URL != a.URL:
		return fmt.Errorf("another target (%s, not %s)", b.URL, a.URL)
	case b.Mode != a.Mode:
		return fmt.Errorf("another connection mode (%s, not %s)", b.Mode, a.Mode)
	case (b.Rate > 0) != (a.Rate > 0):
		return fmt.Errorf("another loop (%s, not %s)", loopOf(b), loopOf(a))
	case b.Poisson != a.Poisson:
		return fmt.Errorf("another arrival process (%s, not %s)", arrivalOf(b), arrivalOf(a))
	case b.ReqsPerConn != a.ReqsPerConn:
		return fmt.Errorf("another reqs_per_conn (%d, not %d)", b.ReqsPerConn, a.ReqsPerConn)
	case (b.UDP != nil) != (a.UDP != nil):
		return errors.New("another protocol (one run has a udp section, the other not)")
	case (b.TLS != nil) != (a.TLS != nil):
		return errors.New("another protocol (one run is https, the other not)")
	case b.TLS != nil && (b.TLS.Resume != a.TLS.Resume || b.TLS.Version != a.TLS.Version):
		return fmt.Errorf("other TLS settings (%s, not %s)", tlsOf(b), tlsOf(a))
	case b.Attribution.Mode != a.Attribution.Mode || b.Attribution.FairBy != a.Attribution.FairBy:
		return fmt.Errorf("attributed otherwise (%s by %s, not %s by %s)", b.Attribution.Mode, b.Attribution.FairBy, a.Attribution.Mode, a.Attribution.FairBy)
	case b.Attribution.Counts != a.Attribution.Counts:
		return fmt.Errorf("attributed otherwise (counting %q, not %q)", b.Attribution.Counts, a.Attribution.Counts)
	case b.Attribution.AcceptsUntraced != a.Attribution.AcceptsUntraced:
		return errors.New("attributed otherwise (one run traced accepts, the other not: -acceptors)")
	case len(b.Histograms) == 0:
		return errors.New("no histograms in it (written by a loadgen older than merge)")
	case b.StartTime.IsZero():
		return errors.New("no start time in it")
	}
	return nil
}

func loopOf(d *Doc) string {
	if d.Rate > 0 {
		return "open loop, rate " + strconv.FormatFloat(d.Rate, 'g', -1, 64)
	}
	return "closed loop"
}

func arrivalOf(d *Doc) string {
	if d.Poisson {
		return "poisson"
	}
	return "constant"
}

// overlapping refuses runs that were not running at the same moment:
// merged, they would read as one run as long as the span between them,
// with a rate and series that no load ever had.
func overlapping(docs []*Doc, files []string) error {
	late, early := 0, 0 // the run that started last, the one that ended first
	endOf := func(d *Doc) time.Time { return d.StartTime.Add(time.Duration(d.DurationSeconds * 1e9)) }
	for i, d := range docs {
		if d.StartTime.After(docs[late].StartTime) {
			late = i
		}
		if endOf(d).Before(endOf(docs[early])) {
			early = i
		}
	}
	if !docs[late].StartTime.Before(endOf(docs[early])) && late != early {
		return fmt.Errorf("merge: %s started %s after %s ended: the runs did not overlap in time (start them together with -start-at)",
			files[late], docs[late].StartTime.Sub(endOf(docs[early])).Round(time.Millisecond), files[early])
	}
	return nil
}

// MergedName is the name of a merge of docs when none is given: the
// parts of the inputs' names (split at '/') that all of them share, and
// how many generators made it, so the result says it is a merge.
func MergedName(docs []*Doc) string {
	var common []string
	for i, d := range docs {
		parts := strings.Split(d.Name, "/")
		if i == 0 {
			common = parts
			continue
		}
		kept := common[:0]
		for _, p := range common {
			if slices.Contains(parts, p) {
				kept = append(kept, p)
			}
		}
		common = kept
	}
	if len(common) == 0 || common[0] == "" {
		common = []string{"Loadgen"}
	}
	return strings.Join(append(common, "generators="+strconv.Itoa(len(docs))), "/")
}

func decode(s string) (*hdrhistogram.Histogram, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	return hdrhistogram.Decode([]byte(s))
}

func sameGeometry(a, b *hdrhistogram.Histogram) bool {
	return a.LowestTrackableValue() == b.LowestTrackableValue() && a.HighestTrackableValue() == b.HighestTrackableValue() &&
		a.SignificantFigures() == b.SignificantFigures()
}

func sumCounts(into map[uint64]*load.PIDCount, from map[string]*load.PIDCount) error {
	for k, pc := range from {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return fmt.Errorf("worker %q is not a number", k)
		}
		x := into[id]
		if x == nil {
			x = &load.PIDCount{Worker: pc.Worker}
			into[id] = x
		}
		x.Requests += pc.Requests
		x.Connections += pc.Connections
	}
	return nil
}

func localityOf(d *Doc) Locality {
	if d.Locality == nil {
		return Locality{}
	}
	return *d.Locality
}

// mergeSeries lines the runs' seconds up by when they ended, to the
// nearest second after the earliest start (runs started together with
// -start-at end theirs within milliseconds of each other), and adds
// them; a second's percentiles come from its merged histogram.
func mergeSeries(docs []*Doc, start time.Time) ([]load.Second, error) {
	bySec := map[int64]*load.Second{}
	hists := map[int64]*hdrhistogram.Histogram{}
	for _, d := range docs {
		for _, s := range d.Series {
			at := s.At
			if at.IsZero() {
				at = d.StartTime.Add(time.Duration(s.T * 1e9))
			}
			k := int64(math.Round(float64(at.Sub(start)) / float64(time.Second)))
			x := bySec[k]
			if x == nil {
				x = &load.Second{T: float64(k), At: start.Add(time.Duration(k) * time.Second), PerPID: map[uint64]int64{},
					PerPIDConns: map[uint64]int64{}, PerUnit: map[uint64]int64{}, ErrorKinds: map[string]int64{}}
				bySec[k] = x
			}
			x.Requests += s.Requests
			x.Connections += s.Connections
			x.Errors += s.Errors
			for kind, n := range s.ErrorsByKind {
				x.ErrorKinds[kind] += n
			}
			for p, n := range s.PerPID {
				id, _ := strconv.ParseUint(p, 10, 64)
				x.PerPID[id] += n
			}
			if s.Unattributed > 0 {
				x.PerPID[0] += s.Unattributed
			}
			units := s.PerUnit
			if d.Attribution.FairBy == load.FairProcess || d.Attribution.FairBy == "" {
				units = s.PerPID
			}
			for u, n := range units {
				id, _ := strconv.ParseUint(u, 10, 64)
				x.PerUnit[id] += n
			}
			if s.Histogram == "" {
				continue
			}
			h, err := decode(s.Histogram)
			if err != nil {
				return nil, fmt.Errorf("merge: a second's histogram: %v", err)
			}
			if hists[k] == nil {
				hists[k] = h
			} else {
				hists[k].Merge(h)
			}
		}
	}
	keys := make([]int64, 0, len(bySec))
	for k := range bySec {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	out := make([]load.Second, 0, len(keys))
	for _, k := range keys {
		x := bySec[k]
		if h := hists[k]; h != nil && h.TotalCount() > 0 {
			x.P50 = time.Duration(h.ValueAtQuantile(50))
			x.P99 = time.Duration(h.ValueAtQuantile(99))
			x.Hist, _ = h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
		}
		out = append(out, *x)
	}
	return out, nil
}

// IntervalLog writes the run's per-second latency histograms as an
// HdrHistogram interval log (format 1.3: a start time, a base time, a
// legend, one compressed histogram per line), which HdrHistogram's log
// tools (HistogramLogProcessor, HdrHistogramVisualizer) read. Values are
// nanoseconds; each line's max is written in milliseconds.
func IntervalLog(w io.Writer, d *Doc) error {
	lw := hdrhistogram.NewHistogramLogWriter(w)
	startMs := d.StartTime.UnixMilli()
	lw.SetBaseTime(startMs)
	for _, step := range []func() error{
		lw.OutputLogFormatVersion,
		func() error {
			return lw.OutputComment("lbbench loadgen " + d.URL + " conn=" + d.Mode + "; values in nanoseconds")
		},
		func() error { return lw.OutputStartTime(startMs) },
		func() error { return lw.OutputBaseTime(startMs) },
		lw.OutputLegend,
	} {
		if err := step(); err != nil {
			return err
		}
	}
	prev := d.StartTime
	for _, s := range d.Series {
		if s.Histogram == "" {
			continue
		}
		h, err := decode(s.Histogram)
		if err != nil {
			return fmt.Errorf("second %.0f: %v", s.T, err)
		}
		end := s.At
		if end.IsZero() {
			end = d.StartTime.Add(time.Duration(s.T * 1e9))
		}
		h.SetStartTimeMs(prev.UnixMilli())
		h.SetEndTimeMs(end.UnixMilli())
		prev = end
		if err := lw.OutputIntervalHistogram(h); err != nil {
			return err
		}
	}
	return nil
}

// tlsOf names an https:// run's TLS settings.
func tlsOf(d *Doc) string {
	s := "full handshakes"
	if d.TLS.Resume {
		s = "resumed sessions"
	}
	if d.TLS.Version != "" {
		s += ", TLS " + d.TLS.Version
	}
	return s
}

// addServing adds a run's serving attribution (who accepted, handoffs,
// what was missed) into attr.
func addServing(attr *load.Attribution, a AttributionDoc) error {
	attr.Counts, attr.AcceptsUntraced = a.Counts, a.AcceptsUntraced
	if a.Counts != load.CountsServed {
		return nil
	}
	attr.ServingRecorded += a.ServingRecorded
	attr.ServingMissed += a.ServingMissed
	attr.UnresolvedResponses += a.UnresolvedResponses
	attr.Unserved += a.Unserved
	attr.Migrated += a.Migrated
	attr.HandedToThread += a.HandedToThread
	attr.DisagreeingResponses += a.DisagreeingResponses
	if attr.AcceptorPIDs == nil {
		attr.AcceptorPIDs, attr.AcceptorTIDs, attr.Handoffs = map[uint64]*load.PIDCount{}, map[uint64]*load.TIDCount{}, map[load.Handoff]int64{}
	}
	if a.Acceptors != nil {
		if err := sumCounts(attr.AcceptorPIDs, a.Acceptors.PerPID); err != nil {
			return err
		}
		if err := sumTIDCounts(attr.AcceptorTIDs, a.Acceptors.PerTID); err != nil {
			return err
		}
	}
	for _, h := range a.Handoffs {
		attr.Handoffs[load.Handoff{Acceptor: h.AcceptorPID, Server: h.ServerPID}] += h.Connections
	}
	return nil
}

// sumTIDCounts adds a document's per-thread counts into m.
func sumTIDCounts(m map[uint64]*load.TIDCount, o map[string]*load.TIDCount) error {
	for k, tc := range o {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return fmt.Errorf("tid %q", k)
		}
		x := m[id]
		if x == nil {
			x = &load.TIDCount{PID: tc.PID, Comm: tc.Comm}
			m[id] = x
		}
		x.Requests += tc.Requests
		x.Connections += tc.Connections
	}
	return nil
}
