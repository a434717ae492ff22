package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbbench/lbbench/internal/kattr"
)

// The serving side of the watch: for every connection on the port, the
// thread that sent on it first (who served it), whether another thread
// sent on it later (migrated), and who accepted it (the handoff).

// ServingSummary is the serving side of -json.
type ServingSummary struct {
	Sends  int64 `json:"sends"`
	Missed int64 `json:"missed"`
	// Connections counts connections with a send seen; PerPID and PerTID
	// count them by the thread that sent first.
	Connections int64                  `json:"connections"`
	PerPID      map[string]*ServeCount `json:"per_pid"`
	PerTID      map[string]*ServeCount `json:"per_tid"`
	// Handoffs count connections by who accepted and who served them;
	// AcceptorUnseen those whose accept the watch did not see (opened
	// before it began); Migrated those another thread sent on later.
	Handoffs       []Handoff `json:"handoffs"`
	AcceptorUnseen int64     `json:"acceptor_unseen"`
	Migrated       int64     `json:"migrated_connections"`
}

// ServeCount is what one process or thread served.
type ServeCount struct {
	PID         int    `json:"pid"`
	Comm        string `json:"comm"`
	Connections int64  `json:"connections"`
	Sends       int64  `json:"sends"`
	Bytes       int64  `json:"bytes"`
}

// Handoff is how many connections one process accepted and another (or
// the same) served.
type Handoff struct {
	AcceptorPID int   `json:"acceptor_pid"`
	ServerPID   int   `json:"server_pid"`
	Connections int64 `json:"connections"`
}

// servedConn is a connection being served.
type servedConn struct {
	tid, server int   // the first sender
	acceptor    int   // its acceptor's pid; 0 not seen yet
	last        int64 // the latest event's time
	migrated    bool
	waited      int // seconds spent waiting for its accept
}

type acceptSeen struct {
	pid int
	at  int64
}

// serving follows the connections of the port.
type serving struct {
	conns    map[kattr.Tuple]*servedConn
	accepted map[kattr.Tuple]acceptSeen // accepts with no send yet
	total    *serveTally
	handoffs map[[2]int]int64
	unseen   int64
	migrated int64
	sends    int64
}

// serveTally counts served connections by process and thread.
type serveTally struct {
	pids, tids map[int]*ServeCount
	conns      int64
}

func newServeTally() *serveTally {
	return &serveTally{pids: map[int]*ServeCount{}, tids: map[int]*ServeCount{}}
}

func (t *serveTally) add(who kattr.Thread, conns, bytes int64) {
	for _, k := range []struct {
		m  map[int]*ServeCount
		id int
	}{{t.pids, who.PID}, {t.tids, who.TID}} {
		c := k.m[k.id]
		if c == nil {
			c = &ServeCount{PID: who.PID, Comm: who.Comm}
			k.m[k.id] = c
		}
		c.Connections += conns
		c.Sends++
		c.Bytes += bytes
	}
	t.conns += conns
}

func newServing() *serving {
	return &serving{conns: map[kattr.Tuple]*servedConn{}, accepted: map[kattr.Tuple]acceptSeen{},
		total: newServeTally(), handoffs: map[[2]int]int64{}}
}

// acceptWait is how many one-second looks a served connection waits for
// its accept (the two rings are read one after the other).
const acceptWait = 2

// forgetAfter is how long a connection with no event stays followed.
const forgetAfter = 10 * time.Second

// step takes one second's accepts and sends, in the kernel's time order:
// an accept of a 4-tuple begins a new connection. sec counts this
// second's served connections; m, if not nil, gets them too.
func (s *serving) step(accepts []kattr.Event, sends []kattr.Send, sec *serveTally, m *watchMetrics, now int64) {
	i, j := 0, 0
	for i < len(accepts) || j < len(sends) {
		if j == len(sends) || i < len(accepts) && accepts[i].At <= sends[j].At {
			a := accepts[i]
			i++
			delete(s.conns, a.Tuple)
			s.accepted[a.Tuple] = acceptSeen{a.PID, a.At}
			continue
		}
		x := sends[j]
		j++
		s.sends++
		c := s.conns[x.Tuple]
		var conns int64
		if c == nil {
			conns = 1
			c = &servedConn{tid: x.TID, server: x.PID}
			if a, ok := s.accepted[x.Tuple]; ok {
				c.acceptor = a.pid
				delete(s.accepted, x.Tuple)
				s.handoff(c, m)
			}
			s.conns[x.Tuple] = c
		} else if x.TID != c.tid && !c.migrated {
			c.migrated = true
			s.migrated++
		}
		c.last = x.At
		s.total.add(x.Thread, conns, x.Bytes)
		sec.add(x.Thread, conns, x.Bytes)
		m.served(x, conns)
	}
	// Connections whose accept came in a later look, or never.
	old := now - forgetAfter.Nanoseconds()
	for tu, c := range s.conns {
		if c.acceptor == 0 && c.waited >= 0 {
			if a, ok := s.accepted[tu]; ok {
				c.acceptor = a.pid
				delete(s.accepted, tu)
				s.handoff(c, m)
			} else if c.waited++; c.waited > acceptWait {
				c.waited = -1
				s.unseen++
			}
		}
		if c.last < old {
			delete(s.conns, tu)
		}
	}
	for tu, a := range s.accepted {
		if a.at < old {
			delete(s.accepted, tu)
		}
	}
}

func (s *serving) handoff(c *servedConn, m *watchMetrics) {
	s.handoffs[[2]int{c.acceptor, c.server}]++
	m.handoff(c.acceptor, c.server)
}

// summary is the serving side of -json.
func (s *serving) summary(missed int64) *ServingSummary {
	out := &ServingSummary{Sends: s.sends, Missed: missed, Connections: s.total.conns,
		PerPID: serveByID(s.total.pids), PerTID: serveByID(s.total.tids), AcceptorUnseen: s.unseen, Migrated: s.migrated}
	for k, n := range s.handoffs {
		out.Handoffs = append(out.Handoffs, Handoff{AcceptorPID: k[0], ServerPID: k[1], Connections: n})
	}
	slices.SortFunc(out.Handoffs, func(a, b Handoff) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(a.AcceptorPID, b.AcceptorPID), cmp.Compare(a.ServerPID, b.ServerPID))
	})
	return out
}

func serveByID(m map[int]*ServeCount) map[string]*ServeCount {
	out := map[string]*ServeCount{}
	for id, c := range m {
		out[strconv.Itoa(id)] = c
	}
	return out
}

// printServing writes the serving side of the summary.
func printServing(w io.Writer, s *ServingSummary) {
	fmt.Fprintf(w, "\n  Served: %d connections with a send, %d sends, %d missed; %d migrated to another thread; %d whose accept was not seen\n",
		s.Connections, s.Sends, s.Missed, s.Migrated, s.AcceptorUnseen)
	for _, side := range []struct {
		name string
		m    map[string]*ServeCount
	}{{"pid", s.PerPID}, {"tid", s.PerTID}} {
		fmt.Fprintf(w, "\n  %-10s %-10s %-16s %12s %7s %10s %12s\n", "served by "+side.name, "pid", "comm", "connections", "share", "sends", "bytes")
		ids := slices.SortedFunc(maps.Keys(side.m), func(a, b string) int { return cmp.Compare(side.m[b].Connections, side.m[a].Connections) })
		for _, id := range ids {
			c := side.m[id]
			fmt.Fprintf(w, "  %-10s %-10d %-16s %12d %6.1f%% %10d %12d\n", id, c.PID, c.Comm, c.Connections,
				100*float64(c.Connections)/float64(max(s.Connections, 1)), c.Sends, c.Bytes)
		}
	}
	acc, srv, handed, total := kattr.HandoffTotals(len(s.Handoffs), func(i int) (int, int, int64) {
		h := s.Handoffs[i]
		return h.AcceptorPID, h.ServerPID, h.Connections
	})
	if total == 0 {
		return
	}
	if handed == 0 {
		fmt.Fprintf(w, "\n  Every connection was served by the process that accepted it\n")
		return
	}
	fmt.Fprintf(w, "\n  Accepted by %d process(es), served by %d: %d of %d connections handed to another process\n", acc, srv, handed, total)
	fmt.Fprintf(w, "  %-12s %-12s %12s\n", "accepted by", "served by", "connections")
	for _, h := range s.Handoffs {
		fmt.Fprintf(w, "  %-12d %-12d %12d\n", h.AcceptorPID, h.ServerPID, h.Connections)
	}
}

// servingMetrics are the serving side's series.
type servingMetrics struct {
	byPID, byTID, bytes, handoffs *prometheus.CounterVec
	missed                        prometheus.Gauge
}

func newServingMetrics(l prometheus.Labels) *servingMetrics {
	return &servingMetrics{
		byPID: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_served_connections_total", ConstLabels: l,
			Help: "Connections on the port, by the process that sent on them first (serving attribution)."}, []string{"pid", "comm"}),
		byTID: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_thread_served_connections_total", ConstLabels: l,
			Help: "Connections on the port, by the thread that sent on them first."}, []string{"pid", "tid", "comm"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_sent_bytes_total", ConstLabels: l,
			Help: "Bytes sent on the port's connections, by the sending process."}, []string{"pid", "comm"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lbbench_watch_handoffs_total", ConstLabels: l,
			Help: "Connections by the process that accepted them and the one that served them."}, []string{"acceptor_pid", "server_pid"}),
		missed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lbbench_watch_missed_sends", ConstLabels: l,
			Help: "Sends the kernel could not hand over (full ring buffer)."}),
	}
}

func (m *watchMetrics) served(x kattr.Send, conns int64) {
	if m == nil || m.serve == nil {
		return
	}
	pid := strconv.Itoa(x.PID)
	if conns > 0 {
		m.serve.byPID.WithLabelValues(pid, x.Comm).Add(float64(conns))
		m.serve.byTID.WithLabelValues(pid, strconv.Itoa(x.TID), x.Comm).Add(float64(conns))
	}
	m.serve.bytes.WithLabelValues(pid, x.Comm).Add(float64(x.Bytes))
}

func (m *watchMetrics) handoff(acceptor, server int) {
	if m == nil || m.serve == nil {
		return
	}
	m.serve.handoffs.WithLabelValues(strconv.Itoa(acceptor), strconv.Itoa(server)).Inc()
}
