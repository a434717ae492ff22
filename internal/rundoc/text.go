package rundoc

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/lbbench/lbbench/internal/kattr"
	"github.com/lbbench/lbbench/internal/load"
)

// Summary writes a wrk-style summary for people: what ran, the counts
// and latencies, who served them, how fairly, and what else the run saw.
func Summary(w io.Writer, d *Doc) {
	summaryRun(w, d)
	summaryCounts(w, d)
	summaryShares(w, d)
	summaryFairness(w, d)
	if a := d.Attribution; a.Mode != "header" {
		attributionText(w, d)
	}
	summaryTail(w, d)
}

// summaryRun says what ran: the loop, the generators merged, and for
// UDP the datagrams and flows.
func summaryRun(w io.Writer, d *Doc) {
	loop := fmt.Sprintf("closed loop, %d connections", d.Conns)
	if d.Rate > 0 {
		arr := "constant"
		if d.Poisson {
			arr = "Poisson"
		}
		loop = fmt.Sprintf("open loop, %g req/s %s, pool of %d connections", d.Rate, arr, d.Conns)
	}
	if u := d.UDP; u != nil {
		loop = fmt.Sprintf("closed loop, %d flows", u.Flows)
		if d.Rate > 0 {
			loop = fmt.Sprintf("open loop, %g datagrams/s over %d flows", d.Rate, u.Flows)
		}
		fmt.Fprintf(w, "%.1fs @ %s (%s)\n", d.DurationSeconds, d.URL, loop)
	} else {
		fmt.Fprintf(w, "%.1fs @ %s (%s, conn=%s)\n", d.DurationSeconds, d.URL, loop, d.Mode)
	}
	if len(d.Inputs) > 0 {
		fmt.Fprintf(w, "  merged from %d runs:\n", len(d.Inputs))
		for _, in := range d.Inputs {
			flag := ""
			if in.Bottleneck {
				flag = "  (loadgen-bound)"
			}
			fmt.Fprintf(w, "    %-24s %-16s started %s  %9.0f req/s  %6d errors  p99 %s%s\n", in.File, in.Hostname,
				in.Started.Format("15:04:05.000"), in.RequestsPerSec, in.Errors, fmtDur(in.P99), flag)
		}
	}
	if u := d.UDP; u != nil {
		fmt.Fprintf(w, "  Datagrams    %d sent, %d answered, %d lost (%.3f%%), %d duplicated, %d reordered, %d malformed, %d not sent (full buffer)\n",
			u.Sent, u.Received, u.Lost, 100*u.LossRatio(), u.Duplicates, u.Reordered, u.Malformed, u.SendFailed)
		if u.Lost > 0 || u.LoadgenSocketDrops > 0 {
			target := "not seen (not on this host)"
			if u.TargetSocketSeen {
				target = strconv.FormatInt(u.TargetSocketDrops, 10) + " dropped"
			}
			fmt.Fprintf(w, "  Loss at      loadgen's sockets %d dropped; target's sockets %s; in between %d\n",
				u.LoadgenSocketDrops, target, u.LostInBetween)
		}
		fmt.Fprintf(w, "  Flows        %d, %d answered by more than one worker; %.2f%% of replies from their flow's first worker; %d rebinds\n",
			u.Flows, u.FlowsMultiWorker, 100*u.FirstWorkerShare, u.Rebinds)
	}
	if d.Interrupted {
		fmt.Fprintf(w, "  interrupted: figures cover what ran\n")
	}
}

// summaryCounts gives the requests, the throughput, the latency table,
// the handshakes and what the end cut.
func summaryCounts(w io.Writer, d *Doc) {
	fmt.Fprintf(w, "  Requests     %d ok, %d errors%s\n", d.Requests, d.Errors, errorKinds(d))
	if d.UDP != nil {
		fmt.Fprintf(w, "  Throughput   %.1f replies/s\n", d.RequestsPerSec)
	} else {
		fmt.Fprintf(w, "  Throughput   %.1f req/s, %.1f new conn/s\n", d.RequestsPerSec, d.ConnsPerSec)
	}
	latency := "Latency"
	if d.Rate > 0 {
		latency = "Latency*" // from intended send times
	}
	for _, row := range []struct {
		name string
		q    Quantiles
	}{{latency, d.Latency}, {"Uncorrected", d.Uncorrected}, {"Connect", d.Connect}, {"Handshake", tlsQuantiles(d)}, {"TTFB", d.TTFB}} {
		if d.UDP != nil && row.name != latency {
			continue // one figure: a datagram's round trip
		}
		if row.q.Count == 0 || (row.name == "Uncorrected" && d.Rate == 0) {
			continue
		}
		q := row.q
		fmt.Fprintf(w, "  %-12s p50 %-8s p90 %-8s p99 %-8s p99.9 %-8s max %s\n", row.name,
			fmtDur(q.P50), fmtDur(q.P90), fmtDur(q.P99), fmtDur(q.P999), fmtDur(q.Max))
	}
	if d.Rate > 0 {
		fmt.Fprintf(w, "  * measured from each request's intended send time (no coordinated omission)\n")
	}
	if t := d.TLS; t != nil {
		fmt.Fprintf(w, "  TLS          %d full, %d resumed handshakes, %d failed%s\n", t.Full, t.Resumed, t.TotalFailures(), tlsFailures(t))
	}
	if d.Requests == 0 {
		fmt.Fprintf(w, "  no successful response: is the target up at %s?\n", d.URL)
	}
	if f := d.InFlightAtEnd; f.Requests > 0 {
		fmt.Fprintf(w, "  In flight    %d request(s) unanswered when the run ended (cut, not counted; oldest waited %s)\n",
			f.Requests, fmtDur(f.OldestSeconds))
	}
}

// summaryShares is the count tables: per pid, per worker id, per thread.
func summaryShares(w io.Writer, d *Doc) {
	conns := "connections"
	if d.UDP != nil {
		conns = "flows" // the flows a worker answered first
	}
	if len(d.PerPID) > 0 {
		t := countTable{d: d, heads: []string{"pid", "worker"}, widths: []int{10, 7}, conns: conns}
		for _, p := range byRequests(d.PerPID) {
			pc := d.PerPID[p]
			t.rows = append(t.rows, countRow{[]string{p, pc.Worker}, pc.Requests, pc.Connections})
		}
		t.write(w)
	}
	if len(d.PerWorker) > 0 {
		t := countTable{d: d, heads: []string{"worker id"}, widths: []int{10}, conns: "connections"}
		for _, id := range byRequests(d.PerWorker) {
			pc := d.PerWorker[id]
			t.rows = append(t.rows, countRow{[]string{id}, pc.Requests, pc.Connections})
		}
		t.write(w)
	}
	if len(d.PerTID) > 0 {
		tids := slices.Collect(maps.Keys(d.PerTID))
		slices.SortFunc(tids, func(a, b string) int { return cmp.Compare(d.PerTID[b].Connections, d.PerTID[a].Connections) })
		t := countTable{d: d, heads: []string{"tid", "pid", "comm"}, widths: []int{10, 10, 16}, conns: "connections"}
		for _, id := range tids {
			tc := d.PerTID[id]
			t.rows = append(t.rows, countRow{[]string{id, strconv.FormatUint(tc.PID, 10), tc.Comm}, tc.Requests, tc.Connections})
		}
		t.write(w)
	}
}

// countTable is one of the summary's count tables: label columns of
// their own widths, then requests and connections (or flows), each with
// its share of the run's.
type countTable struct {
	d      *Doc
	heads  []string
	widths []int
	conns  string
	rows   []countRow
}

type countRow struct {
	labels                []string
	requests, connections int64
}

func (t *countTable) write(w io.Writer) {
	fmt.Fprint(w, "\n ")
	for i, h := range t.heads {
		fmt.Fprintf(w, " %-*s", t.widths[i], h)
	}
	fmt.Fprintf(w, " %12s %7s %12s %7s\n", "requests", "share", t.conns, "share")
	for _, r := range t.rows {
		fmt.Fprint(w, " ")
		for i, l := range r.labels {
			fmt.Fprintf(w, " %-*s", t.widths[i], l)
		}
		fmt.Fprintf(w, " %12d %6.1f%% %12d %6.1f%%\n", r.requests, pct(r.requests, t.d.Requests), r.connections, pct(r.connections, t.d.Connections))
	}
}

// summaryFairness gives the fairness figures of the units counted.
func summaryFairness(w io.Writer, d *Doc) {
	units := d.Units()
	if len(units) == 0 {
		return
	}
	if missing := d.Workers - len(units); missing > 0 {
		fmt.Fprintf(w, "  %d worker(s) served nothing\n", missing)
	}
	f := d.Fairness
	fmt.Fprintf(w, "  Fairness by %s\n", d.Attribution.FairBy)
	fmt.Fprintf(w, "  Fairness (requests)    max/mean %.3f  min/mean %.3f  CoV %.3f  Jain %.4f  chi2 %.1f (p=%.3g)\n",
		f.Requests.MaxOverMean, f.Requests.MinOverMean, f.Requests.CoV, f.Requests.Jain, f.Requests.ChiSquare, f.Requests.PValue)
	fmt.Fprintf(w, "  Fairness (connections) max/mean %.3f  min/mean %.3f  CoV %.3f  Jain %.4f  chi2 %.1f (p=%.3g)\n",
		f.Connections.MaxOverMean, f.Connections.MinOverMean, f.Connections.CoV, f.Connections.Jain, f.Connections.ChiSquare, f.Connections.PValue)
	fmt.Fprintf(w, "  Per-second Jain        mean %.4f  min %.4f\n", f.PerSecondJainMean, f.PerSecondJainMin)
	if l := d.Locality; l != nil {
		fmt.Fprintf(w, "  Locality               %.1f%% of %d connections handled on the CPU they arrived on\n", 100*l.Share, l.Connections)
	}
}

// summaryTail gives what was left unattributed, the restarts, the
// kernel's counters, the problems and the self-check.
func summaryTail(w io.Writer, d *Doc) {
	if u := d.Unattributed; u != nil {
		fmt.Fprintf(w, "\n  Unattributed %d requests (%.1f%%) on %d connections carry no usable worker pid; left out of the fairness figures\n",
			u.Requests, pct(u.Requests, d.Requests), u.Connections)
		if u.InvalidValues > 0 {
			fmt.Fprintf(w, "  WARNING: %d responses had a worker-pid header that is not a pid (e.g. %q)\n", u.InvalidValues, u.Example)
		}
	}
	if r := d.Restarts; r != nil {
		fmt.Fprintf(w, "\n  Restarts (%s): %d during the run; %.2f failed requests per restart (refused %d, reset %d, timeout %d); %.0f resets per 1M connections\n",
			r.Strategy, r.Count, r.FailedPerRestart, r.Refused, r.Reset, r.Timeout, r.ResetsPerMillion)
		if r.SecondsWith > 0 {
			fmt.Fprintf(w, "  p99 in seconds with a restart %s, without %s\n", fmtDur(r.P99WithRestart), fmtDur(r.P99Without))
		}
	}
	k := d.Kernel
	if d.UDP != nil {
		fmt.Fprintf(w, "\n  Kernel: UDP RcvbufErrors +%d, InErrors +%d, SndbufErrors +%d (the whole host)\n",
			k.Delta["UdpRcvbufErrors"], k.Delta["UdpInErrors"], k.Delta["UdpSndbufErrors"])
	} else {
		fmt.Fprintf(w, "\n  Kernel: TIME_WAIT %d -> %d; ListenOverflows +%d, ListenDrops +%d, TCPSynRetrans +%d, resets sent +%d\n",
			k.TimeWaitBefore, k.TimeWaitAfter, k.Delta["ListenOverflows"], k.Delta["ListenDrops"], k.Delta["TCPSynRetrans"], k.Delta["TcpOutRsts"])
	}
	for _, p := range d.Problems {
		fmt.Fprintf(w, "  FAILED: %s\n", p)
	}
	sc := d.SelfCheck
	if sc.Bottleneck {
		fmt.Fprintf(w, "  WARNING: loadgen may be the bottleneck: %s\n", strings.Join(sc.Reasons, "; "))
	} else {
		fmt.Fprintf(w, "  Self-check: ok (loadgen CPU %.0f%% of %d CPUs)\n", sc.CPUUtilization*100, sc.Cores)
	}
}

// byRequests lists m's keys, most requests first.
func byRequests(m map[string]*load.PIDCount) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(m[b].Requests, m[a].Requests) })
	return keys
}

func pct(n, total int64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}

func errorKinds(d *Doc) string {
	return countsOf([]string{"refused", "reset", "timeout", "addrnotavail", "status", "malformed", "tls", "other"}, d.ErrorsByKind)
}

// countsOf lists the non-zero counts of keys, in their order, in
// parentheses ("" if none).
func countsOf(keys []string, m map[string]int64) string {
	var parts []string
	for _, k := range keys {
		if n := m[k]; n > 0 {
			parts = append(parts, k+" "+strconv.FormatInt(n, 10))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// SeriesCSV writes the per-second series: one row a second, a column per
// worker pid.
func SeriesCSV(w io.Writer, d *Doc) error {
	pidSet := map[string]bool{}
	for _, s := range d.Series {
		for p := range s.PerPID {
			pidSet[p] = true
		}
	}
	var pids []string
	for p := range pidSet {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	cw := csv.NewWriter(w)
	head := []string{"t_seconds", "requests", "connections", "errors", "p50_seconds", "p99_seconds", "jain"}
	for _, p := range pids {
		head = append(head, "pid_"+p)
	}
	cw.Write(head)
	for _, s := range d.Series {
		row := []string{ff(s.T), strconv.FormatInt(s.Requests, 10), strconv.FormatInt(s.Connections, 10),
			strconv.FormatInt(s.Errors, 10), ff(s.P50), ff(s.P99), ff(s.Jain)}
		for _, p := range pids {
			row = append(row, strconv.FormatInt(s.PerPID[p], 10))
		}
		cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

func ff(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// tlsQuantiles is the handshake row of the latency table (none: not https).
func tlsQuantiles(d *Doc) Quantiles {
	if d.TLSHandshake == nil {
		return Quantiles{}
	}
	return *d.TLSHandshake
}

// tlsFailures lists the handshake failures by reason.
func tlsFailures(t *TLSDoc) string { return countsOf(load.TLSFailureReasons, t.Failures) }

// attributionText says what kernel attribution counted and how it went,
// and who handed connections to whom.
func attributionText(w io.Writer, d *Doc) {
	a := d.Attribution
	what := "who accepted each connection"
	if a.Counts == load.CountsServed {
		what = "who sent each response"
	}
	sep := "; "
	if a.AcceptsUntraced {
		fmt.Fprintf(w, "  Attribution (%s, counting %s, accepts not traced)", a.Mode, what)
		sep = ": "
	} else {
		fmt.Fprintf(w, "  Attribution (%s, counting %s): %d accepts recorded, %d missed, %d connections unresolved",
			a.Mode, what, a.Recorded, a.Missed, a.Unresolved)
	}
	if a.Counts == load.CountsServed {
		fmt.Fprintf(w, "%s%d sends recorded, %d missed, %d responses unresolved, %d connections unserved, %d migrated",
			sep, a.ServingRecorded, a.ServingMissed, a.UnresolvedResponses, a.Unserved, a.Migrated)
	}
	if a.Mode == load.AttrBoth {
		fmt.Fprintf(w, ", %d connections where the kernel and the header disagree", a.Disagreements)
		if a.Counts == load.CountsServed {
			fmt.Fprintf(w, " (%d responses)", a.DisagreeingResponses)
		}
	}
	fmt.Fprintln(w)
	if a.Incomplete {
		fmt.Fprintln(w, "  WARNING: the kernel dropped events (full ring buffer): the per-worker counts miss what they named")
	}
	if a.Note != "" {
		fmt.Fprintf(w, "  Note: %s\n", a.Note)
	}
	if a.Acceptors == nil || len(a.Handoffs) == 0 {
		return
	}
	accPIDs, srvPIDs, handed, total := kattr.HandoffTotals(len(a.Handoffs), func(i int) (uint64, uint64, int64) {
		h := a.Handoffs[i]
		return h.AcceptorPID, h.ServerPID, h.Connections
	})
	if handed == 0 {
		fmt.Fprintf(w, "  Every connection was served by the process that accepted it (%d accepting, %d serving threads; %d connections served by another thread than their acceptor)\n",
			len(a.Acceptors.PerTID), len(d.PerTID), a.HandedToThread)
		return
	}
	fmt.Fprintf(w, "  Accepted by %s (%s), served by %s (%s): %d of %d connections handed to another process\n",
		plural(accPIDs, "process", "processes"), plural(len(a.Acceptors.PerTID), "thread", "threads"),
		plural(srvPIDs, "process", "processes"), plural(len(d.PerTID), "thread", "threads"), handed, total)
	fmt.Fprintf(w, "  %-12s %-12s %12s %7s\n", "accepted by", "served by", "connections", "share")
	for i, h := range a.Handoffs {
		if i == maxHandoffRows {
			fmt.Fprintf(w, "  ... %d more pairs (JSON: attribution.handoffs)\n", len(a.Handoffs)-i)
			break
		}
		fmt.Fprintf(w, "  %-12d %-12d %12d %6.1f%%\n", h.AcceptorPID, h.ServerPID, h.Connections, pct(h.Connections, total))
	}
}

// maxHandoffRows bounds the handoff table of the summary.
const maxHandoffRows = 16

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
