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
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/steer"
)

// Model names.
const (
	Single    = "single"
	Shared    = "shared"
	ReusePort = "reuseport"
)

// Models lists the accept models.
var Models = []string{Single, Shared, ReusePort}

// Accept strategies for workers that call accept themselves.
const (
	AcceptNetpoll   = "netpoll"   // Go's netpoller (one epoll per process, edge-triggered)
	AcceptBlocking  = "blocking"  // accept4 on a blocking socket, on a locked OS thread
	AcceptExclusive = "exclusive" // the worker's own epoll with EPOLLEXCLUSIVE, then accept4
)

// AcceptStrategies lists the accept strategies.
var AcceptStrategies = []string{AcceptNetpoll, AcceptBlocking, AcceptExclusive}

// Dispatch policies of the single model.
const (
	DispatchRR    = "rr"
	DispatchLeast = "least"
)

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
}

// Restart strategies.
const (
	RestartOverlap  = "reuseport-overlap" // new worker opens its own socket, then the old one closes its
	RestartMigrate  = "reuseport-migrate" // the same with net.ipv4.tcp_migrate_req=1
	RestartHandoff  = "fd-handoff"        // the worker's socket outlives it: the successor inherits it
	RestartInherit  = "shared-inherit"    // the shared model's one socket, workers replaced under it
	RestartDispatch = "dispatch"          // single: the dispatcher switches to the new worker
)

// RestartStrategies lists the strategies.
var RestartStrategies = []string{RestartOverlap, RestartMigrate, RestartHandoff, RestartInherit, RestartDispatch}

// restartModel is the model each strategy works with.
var restartModel = map[string]string{
	RestartOverlap: ReusePort, RestartMigrate: ReusePort, RestartHandoff: ReusePort,
	RestartInherit: Shared, RestartDispatch: Single,
}

// defaultRestart is each model's natural strategy.
var defaultRestart = map[string]string{ReusePort: RestartOverlap, Shared: RestartInherit, Single: RestartDispatch}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Model:       ReusePort,
		Workers:     runtime.NumCPU(),
		Addr:        "127.0.0.1:8080",
		MetricsAddr: "127.0.0.1:9100",
		Dispatch:    DispatchRR,
		Accept:      AcceptNetpoll,
		GOMAXPROCS:  1,
		Grace:       5 * time.Second,
		Steer:       steer.Hash,
	}
}

// Validate checks c and returns one error naming the first problem.
func (c *Config) Validate() error {
	switch {
	case !slices.Contains(Models, c.Model):
		return fmt.Errorf("unknown model %q (want single, shared or reuseport)", c.Model)
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return fmt.Errorf("-workers %d: want 1 to %d", c.Workers, MaxWorkers)
	case !slices.Contains(AcceptStrategies, c.Accept):
		return fmt.Errorf("unknown accept strategy %q (want netpoll, blocking or exclusive)", c.Accept)
	case c.Dispatch != DispatchRR && c.Dispatch != DispatchLeast:
		return fmt.Errorf("unknown dispatch %q (want rr or least)", c.Dispatch)
	case c.Backlog < 0:
		return fmt.Errorf("-backlog %d: must not be negative", c.Backlog)
	case c.GOMAXPROCS < 1 || c.GOMAXPROCS > 256:
		return fmt.Errorf("-gomaxprocs %d: want 1 to 256", c.GOMAXPROCS)
	case c.Work < 0 || c.Sleep < 0 || c.Grace < 0:
		return fmt.Errorf("-work, -sleep and -grace must not be negative")
	case c.Work > time.Minute || c.Sleep > time.Minute:
		return fmt.Errorf("-work and -sleep are per request: at most 1m")
	case !slices.Contains(steer.Modes, c.Steer):
		return fmt.Errorf("unknown steer %q (want hash, cpu, incoming-cpu, bpf-rr or bpf-least)", c.Steer)
	case c.Steer != steer.Hash && c.Model != ReusePort:
		return fmt.Errorf("-steer %s applies to the reuseport model only", c.Steer)
	case steer.UsesEBPF(c.Steer) && c.Workers > 256:
		return fmt.Errorf("-steer %s: at most 256 workers", c.Steer)
	case c.Restart != "" && !slices.Contains(RestartStrategies, c.Restart):
		return fmt.Errorf("unknown restart strategy %q (want reuseport-overlap, reuseport-migrate, fd-handoff, shared-inherit or dispatch)", c.Restart)
	case c.Restart != "" && restartModel[c.Restart] != c.Model:
		return fmt.Errorf("-restart %s goes with -model %s", c.Restart, restartModel[c.Restart])
	case c.RestartEvery < 0 || (c.RestartEvery > 0 && c.RestartEvery < 10*time.Millisecond):
		return fmt.Errorf("-restart-every %v: want 0 (off) or at least 10ms", c.RestartEvery)
	}
	if c.Restart == "" {
		c.Restart = defaultRestart[c.Model]
	}
	if _, err := sockets.ParseAddr(c.Addr); err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if c.MetricsAddr != "" && c.MetricsAddr != "off" {
		if _, err := sockets.ParseAddr(c.MetricsAddr); err != nil {
			return fmt.Errorf("-metrics-addr: %w", err)
		}
	}
	return nil
}
