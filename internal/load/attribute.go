package load

import (
	"net"
	"time"

	"github.com/lbbench/lbbench/internal/kattr"

	"github.com/lbbench/lbbench/internal/variant"
)

// Attribution modes: who served a request.
const (
	AttrHeader = "header" // the worker-pid header the server sends
	AttrKernel = "kernel" // the process and thread the kernel saw send the response (or accept the connection)
	AttrBoth   = "both"   // the kernel's, cross-checked against the header
)

// Attributions lists the attribution modes.
var Attributions = variant.List{AttrHeader, AttrKernel, AttrBoth}

// What kernel attribution counts (Attribution.Counts).
const (
	CountsServed  = "served"  // the thread that sent each response's last byte
	CountsAccepts = "accepts" // the thread that accepted each connection (no serving hook)
)

// What the fairness figures count as a worker (Options.FairBy).
const (
	FairProcess = "process" // the pid (header or kernel)
	FairThread  = "thread"  // the serving (or accepting) thread (kernel)
	FairWorker  = "worker"  // the worker id the server sends (in-process workers share a pid)
)

// FairBys lists what the fairness figures may count as a worker.
var FairBys = variant.List{FairProcess, FairThread, FairWorker}

// Acceptors names the thread that accepted a connection (kattr.Tracer).
type Acceptors interface {
	// Accepted returns the acceptor of the connection t that began at
	// notBefore (Mono).
	Accepted(t kattr.Tuple, notBefore int64) (kattr.Acceptor, bool)
	// Mono converts a time to the clock Accepted takes.
	Mono(time.Time) int64
	// Drain reads pending accepts and forgets those older than maxAge.
	Drain(maxAge time.Duration)
	Recorded() int64
	Missed() int64
}

// Servers names the thread that sent the bytes of a response
// (kattr.Sends).
type Servers interface {
	// Served returns who sent byte through (from 1) of the connection t
	// that began at notBefore (Mono); last says it is the connection's
	// last question; waited, that it slept for sends not yet delivered.
	Served(t kattr.Tuple, notBefore, through int64, last bool) (who kattr.Thread, ok, waited bool)
	// Mono converts a time to the clock Served takes.
	Mono(time.Time) int64
	Drain(maxAge time.Duration)
	Recorded() int64
	Missed() int64
}

// TIDCount counts what one thread served (or accepted).
type TIDCount struct {
	PID         uint64 `json:"pid"`
	Comm        string `json:"comm"`
	Requests    int64  `json:"requests"`
	Connections int64  `json:"connections"`
}

// Attribution is how the kernel attribution went.
type Attribution struct {
	Mode string
	// Counts says whom PerPID and PerTID count: CountsServed or
	// CountsAccepts. AcceptsUntraced: serving attribution alone (no
	// Kernel), so nothing is known of acceptors or handoffs.
	Counts          string
	AcceptsUntraced bool
	// Recorded accepts read from the kernel (on the watched port, by any
	// client); Missed ones the kernel could not hand over (full ring);
	// Unresolved this run's answered connections with no accept found.
	Recorded, Missed int64
	Unresolved       PIDCount
	// Both: connections whose acceptor is not the pid the server named,
	// the header's own per-pid counts, and a few examples.
	Disagreements int64
	HeaderPerPID  map[uint64]*PIDCount
	Examples      []Disagreement
	// Serving attribution: sends read and missed (full ring); responses
	// whose sender was not found; connections that got no response;
	// connections whose responses came from more than one thread.
	ServingRecorded, ServingMissed int64
	UnresolvedResponses            int64
	Unserved                       int64
	Migrated                       int64
	HandedToThread                 int64 // connections whose first response came from another thread than their acceptor
	DisagreeingResponses           int64 // both: responses whose header names another pid than their sender
	// Who accepted the connections (counted by who served them), and
	// how many each acceptor pid handed to each serving pid.
	AcceptorPIDs map[uint64]*PIDCount
	AcceptorTIDs map[uint64]*TIDCount
	Handoffs     map[Handoff]int64
}

// Handoff is a pair of processes: the one that accepted connections and
// the one that served them.
type Handoff struct{ Acceptor, Server uint64 }

// Disagreement is one connection the kernel and the header attribute
// differently.
type Disagreement struct {
	Client    string `json:"client"`
	KernelPID uint64 `json:"kernel_pid"`
	KernelTID uint64 `json:"kernel_tid"`
	HeaderPID uint64 `json:"header_pid"`
}

// maxExamples bounds the disagreements kept as examples.
const maxExamples = 10

// acceptor is what a slot learned of its connection's acceptor; traced
// says accepts are traced at all (not serving attribution alone).
type acceptor struct {
	kattr.Acceptor
	known, asked, traced bool
}

// server is what a slot learned of who served its connection.
type server struct {
	first    kattr.Thread // the sender of the first response
	known    bool         // first is set
	migrated bool         // a later response came from another thread
}

// served is a response's sender, as a sample carries it.
type served struct {
	kattr.Thread
	known bool
	// migrated: the first response of the connection from a thread
	// other than its first response's.
	migrated bool
}

// began resets what a slot knows of its connection, which began at at.
func (s *slot) began(at time.Time) {
	s.reqs, s.counted, s.acc, s.rx, s.srv = 0, false, acceptor{}, 0, server{}
	switch o := &s.l.e.o; {
	case o.Kernel != nil:
		s.connMono = o.Kernel.Mono(at)
	case o.Serving != nil:
		s.connMono = o.Serving.Mono(at)
	}
}

// attribute names, for the response just whole, who accepted its
// connection and who sent it; last says the connection ends with it.
func (s *slot) attribute(last bool) {
	x := &s.x
	s.learn()
	x.acc = &s.acc
	who := s.acc.Acceptor
	known := s.acc.known
	if sv := s.l.e.o.Serving; sv != nil {
		x.srv, x.serving = served{}, true
		if s.tuple.Client.IsValid() {
			var waited bool
			x.srv.Thread, x.srv.known, waited = sv.Served(s.tuple, s.connMono, s.rx, last)
			if waited && !s.l.e.o.TLS.Enabled {
				// The epoll loop's clock is stale by the wait: the next
				// request must not count it as its own latency. (TLS
				// slots read the clock themselves and share their shell
				// loop, whose clock they leave alone.)
				s.l.now = time.Now()
			}
		}
		switch {
		case !x.srv.known:
		case !s.srv.known:
			s.srv = server{first: x.srv.Thread, known: true}
		case !s.srv.migrated && x.srv.TID != s.srv.first.TID:
			s.srv.migrated, x.srv.migrated = true, true
		}
		who, known = x.srv.Thread, x.srv.known
	}
	// The client's address names a disagreement's example: only when the
	// server sent a pid header (attribution both) that is not the
	// kernel's, not on every response of a server that sends none.
	if x.pid != 0 && (!known || x.pid != uint64(who.PID)) {
		x.client = s.tuple.Client.String()
	}
}

// unserved says the connection under way was established and got no
// response (serving attribution counts it).
func (s *slot) unserved() bool {
	return s.l.e.o.Serving != nil && s.reqs == 0 && s.x.connect > 0
}

// countingConn counts the bytes read through it (TLS: the records, as
// the server sent them).
type countingConn struct {
	net.Conn
	n *int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	*c.n += int64(n)
	return n, err
}

// learn asks, once per connection at its first answer, who accepted it.
func (s *slot) learn() {
	if s.acc.asked {
		return
	}
	s.acc.asked = true
	k := s.l.e.o.Kernel
	if k == nil {
		return
	}
	s.acc.traced = true
	if !s.tuple.Client.IsValid() {
		return
	}
	s.acc.Acceptor, s.acc.known = k.Accepted(s.tuple, s.connMono)
}
