// Package models runs the target server: a supervisor process and worker
// processes that get their connections through one of the accept models.
//
//   - single: the supervisor accepts every connection and hands the fd to
//     a worker over a Unix socket (SCM_RIGHTS).
//   - shared: the supervisor binds one socket; every worker inherits it and
//     accepts on it (Go netpoller, blocking accept4, or EPOLLEXCLUSIVE).
//   - reuseport: every worker opens its own SO_REUSEPORT socket.
package models

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/lbbench/lbbench/internal/serve"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/steer"

	"github.com/lbbench/lbbench/internal/variant"
)

// Model names.
const (
	Single    = "single"
	Shared    = "shared"
	ReusePort = "reuseport"
)

// Models lists the accept models.
var Models = variant.List{Single, Shared, ReusePort}

// Serving paths (-http): internal/serve.
const (
	HTTPLean    = "lean"    // serve.Lean: raw system calls, an event loop per worker
	HTTPNetHTTP = "nethttp" // serve.NetHTTP: Go's net/http server, as most Go services run
)

// HTTPPaths lists the serving paths.
var HTTPPaths = variant.List{HTTPLean, HTTPNetHTTP}

// MaxWorkers bounds -workers: beyond this the suite measures the
// scheduler, not accept.
const MaxWorkers = 1024

// Config is the target's configuration. The zero value is not valid; use
// DefaultConfig.
type Config struct {
	Model       string        `json:"model"`
	Workers     int           `json:"workers"`
	Addr        string        `json:"addr"`
	MetricsAddr string        `json:"metrics_addr"` // "" or "off" disables
	Dispatch    string        `json:"dispatch"`     // single only
	Accept      string        `json:"accept"`       // shared and reuseport
	Backlog     int           `json:"backlog"`      // 0: net.core.somaxconn
	MPTCP       bool          `json:"mptcp"`
	GOMAXPROCS  int           `json:"gomaxprocs"` // per worker
	Pin         bool          `json:"pin"`
	Work        time.Duration `json:"work"`  // CPU busy time per request
	Sleep       time.Duration `json:"sleep"` // idle time per request
	Grace       time.Duration `json:"grace"` // drain bound on stop
	Steer       string        `json:"steer"` // reuseport: hash, cpu, incoming-cpu, bpf-rr, bpf-least
	// Restart is how a worker is replaced in a rolling restart (SIGHUP or
	// RestartEvery); "" picks the model's natural way.
	Restart      string        `json:"restart"`
	RestartEvery time.Duration `json:"restart_every"` // 0: only on SIGHUP
	// HeaderTimeout bounds the wait for a complete request head, from
	// accept or from a later request's first byte (nginx's
	// client_header_timeout); IdleTimeout the wait for the next request
	// on a keep-alive connection (nginx's keepalive_timeout).
	HeaderTimeout time.Duration `json:"header_timeout"`
	IdleTimeout   time.Duration `json:"idle_timeout"`
	// Locality checks for every accepted connection whether its packets
	// arrive on the CPU the worker runs on (SO_INCOMING_CPU and getcpu:
	// two system calls); on by default with -steer cpu and incoming-cpu.
	Locality bool `json:"locality"`
	// HTTP is the serving path: HTTPLean or HTTPNetHTTP.
	HTTP string `json:"http"`
	// InProc runs the workers as goroutines of one process
	// (inproc_linux.go) rather than as processes.
	InProc bool `json:"inproc"`
	// Proto is ProtoTCP (HTTP) or ProtoUDP (datagrams, udp_linux.go);
	// RcvBuf, if set, is each socket's SO_RCVBUF.
	Proto  string `json:"proto"`
	RcvBuf int    `json:"rcvbuf"`
	// TLSCert and TLSKey, if set, are the PEM files of the certificate
	// and key every worker terminates TLS with (tls.go); TLSTicketSeed
	// is what the workers derive their shared session-ticket key from,
	// drawn by the supervisor at start.
	TLSCert       string `json:"tls_cert,omitempty"`
	TLSKey        string `json:"tls_key,omitempty"`
	TLSTicketSeed string `json:"tls_ticket_seed,omitempty"`
	// ReadyFD, if > 0, is a descriptor the target writes its Ready
	// document to (one JSON line) once every worker serves, then closes.
	ReadyFD int `json:"-"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Model:         ReusePort,
		Workers:       runtime.NumCPU(),
		Addr:          "127.0.0.1:8080",
		MetricsAddr:   "127.0.0.1:9100",
		Dispatch:      DispatchRR,
		Accept:        AcceptNetpoll,
		GOMAXPROCS:    1,
		Grace:         5 * time.Second,
		Steer:         steer.Hash,
		HTTP:          HTTPLean,
		Proto:         ProtoTCP,
		HeaderTimeout: serve.DefaultHeaderTimeout,
		IdleTimeout:   serve.DefaultIdleTimeout,
	}
}

// Validate checks c, fills in what follows from it (the model's own
// restart strategy, pinning for CPU steering), and returns one error
// naming the first problem.
func (c *Config) Validate() error {
	switch {
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return fmt.Errorf("-workers %d: want 1 to %d", c.Workers, MaxWorkers)
	case !AcceptStrategies.Has(c.Accept):
		return fmt.Errorf("unknown accept strategy %q (want %s)", c.Accept, AcceptStrategies.Words())
	case c.Backlog < 0:
		return fmt.Errorf("-backlog %d: must not be negative", c.Backlog)
	case c.GOMAXPROCS < 1 || c.GOMAXPROCS > 256:
		return fmt.Errorf("-gomaxprocs %d: want 1 to 256", c.GOMAXPROCS)
	case c.Work < 0 || c.Sleep < 0 || c.Grace < 0:
		return fmt.Errorf("-work, -sleep and -grace must not be negative")
	case c.Work > time.Minute || c.Sleep > time.Minute:
		return fmt.Errorf("-work and -sleep are per request: at most 1m")
	case c.HeaderTimeout <= 0 || c.IdleTimeout <= 0:
		return fmt.Errorf("-header-timeout and -idle-timeout must be positive")
	case !steer.Modes.Has(c.Steer):
		return fmt.Errorf("unknown steer %q (want %s)", c.Steer, steer.Modes.Words())
	case steer.UsesEBPF(c.Steer) && c.Workers > 256:
		return fmt.Errorf("-steer %s: at most 256 workers", c.Steer)
	case c.Restart != "" && !RestartStrategies.Has(c.Restart):
		return fmt.Errorf("unknown restart strategy %q (want %s)", c.Restart, RestartStrategies.Words())
	case !HTTPPaths.Has(c.HTTP):
		return fmt.Errorf("-http %q: want %s", c.HTTP, HTTPPaths.Words())
	case c.HTTP == HTTPNetHTTP && c.Locality:
		return fmt.Errorf("-locality needs -http lean (net/http does not expose the connection's descriptor)")
	case !Protos.Has(c.Proto):
		return fmt.Errorf("-proto %q: want %s", c.Proto, Protos.Words())
	case c.RcvBuf < 0:
		return errors.New("-rcvbuf must not be negative")
	case c.Proto == ProtoUDP && c.Model == Single:
		return errors.New("-proto udp: the single model hands connections to workers, and a datagram has none: use shared or reuseport")
	case c.Proto == ProtoUDP && (c.HTTP != HTTPLean || c.InProc || c.RestartEvery > 0 || c.Locality):
		return errors.New("-proto udp serves datagrams itself: not with -http nethttp, -inproc, -restart-every or -locality")
	case c.Proto == ProtoUDP && c.Steer == steer.BPFLeast:
		return errors.New("-steer bpf-least counts open connections: datagrams have none (use bpf-flow or bpf-rr)")
	case c.Proto == ProtoTCP && c.Steer == steer.BPFFlow:
		return errors.New("-steer bpf-flow reads a flow id from a datagram: it goes with -proto udp")
	case c.InProc && c.Model == Single:
		return errors.New("-inproc: the single model hands connections to worker processes; use shared or reuseport")
	case c.InProc && c.RestartEvery > 0:
		return errors.New("-inproc: in-process workers cannot be restarted one at a time (-restart-every)")
	case c.InProc && (c.Pin || steer.Pinned(c.Steer)):
		return errors.New("-inproc: goroutines cannot be pinned (-pin, -steer cpu|incoming-cpu)")
	case c.RestartEvery < 0 || (c.RestartEvery > 0 && c.RestartEvery < 10*time.Millisecond):
		return fmt.Errorf("-restart-every %v: want 0 (off) or at least 10ms", c.RestartEvery)
	}
	if _, err := sockets.ParseAddr(c.Addr); err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if c.MetricsAddr != "" && c.MetricsAddr != "off" {
		if _, err := sockets.ParseAddr(c.MetricsAddr); err != nil {
			return fmt.Errorf("-metrics-addr: %w", err)
		}
		if sameAddr(c.Addr, c.MetricsAddr) {
			return fmt.Errorf("-addr and -metrics-addr are both %s: give the metrics their own port (or -metrics-addr off)", c.Addr)
		}
	}
	if steer.Pinned(c.Steer) {
		c.Pin, c.Locality = true, c.HTTP == HTTPLean
	}
	// The model checks the flags that are its own and picks its restart
	// strategy.
	_, err := newModel(c)
	return err
}

// sameAddr reports whether two HOST:PORT addresses would collide.
func sameAddr(a, b string) bool {
	x, err1 := sockets.ParseAddr(a)
	y, err2 := sockets.ParseAddr(b)
	if err1 != nil || err2 != nil || x.Port() != y.Port() {
		return false
	}
	return x.Addr() == y.Addr() || x.Addr().IsUnspecified() || y.Addr().IsUnspecified()
}

// checkOwn checks the strategies of a model that are the model's own:
// steering belongs to reuseport, each restart strategy to one model.
// An empty restart strategy becomes the model's natural one.
func checkOwn(c *Config, own string) error {
	if c.Steer != steer.Hash && own != ReusePort {
		return fmt.Errorf("-steer %s applies to the reuseport model only", c.Steer)
	}
	if c.Restart == "" {
		c.Restart = defaultRestart[own]
	} else if restartModel[c.Restart] != own {
		return fmt.Errorf("-restart %s goes with -model %s", c.Restart, restartModel[c.Restart])
	}
	return nil
}
