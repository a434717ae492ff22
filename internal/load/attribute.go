package load

import (
	"time"

	"github.com/lbbench/lbbench/internal/kattr"
)

// Attribution modes: who served a request.
const (
	AttrHeader = "header" // the worker-pid header the server sends
	AttrKernel = "kernel" // the process and thread the kernel saw accept the connection
	AttrBoth   = "both"   // the kernel's, cross-checked against the header
)

// What the fairness figures count as a worker (Options.FairBy).
const (
	FairProcess = "process" // the pid (header or kernel)
	FairThread  = "thread"  // the accepting thread (kernel)
	FairWorker  = "worker"  // the worker id the server sends (in-process workers share a pid)
)

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

// TIDCount counts what one accepting thread took.
type TIDCount struct {
	PID         uint64 `json:"pid"`
	Comm        string `json:"comm"`
	Requests    int64  `json:"requests"`
	Connections int64  `json:"connections"`
}

// Attribution is how the kernel attribution went.
type Attribution struct {
	Mode string
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
}

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

// acceptor is what a slot learned of its connection's acceptor.
type acceptor struct {
	kattr.Acceptor
	known, asked bool
}

// learn asks, once per connection at its first answer, who accepted it.
func (s *slot) learn() {
	if s.acc.asked {
		return
	}
	s.acc.asked = true
	k := s.l.e.o.Kernel
	if !s.tuple.Client.IsValid() {
		return
	}
	s.acc.Acceptor, s.acc.known = k.Accepted(s.tuple, s.connMono)
}
