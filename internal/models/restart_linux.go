package models

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/variant"
)

// Restart strategies: how a worker is replaced in a rolling restart. The
// successor starts and listens first; then the old process stops
// accepting and drains.
const (
	RestartOverlap  = "reuseport-overlap" // new worker opens its own socket, then the old one closes its
	RestartMigrate  = "reuseport-migrate" // the same with net.ipv4.tcp_migrate_req=1
	RestartHandoff  = "fd-handoff"        // the worker's socket outlives it: the successor inherits it
	RestartInherit  = "shared-inherit"    // the shared model's one socket, workers replaced under it
	RestartDispatch = "dispatch"          // single: the dispatcher switches to the new worker
)

// RestartStrategies lists the strategies.
var RestartStrategies = variant.List{RestartOverlap, RestartMigrate, RestartHandoff, RestartInherit, RestartDispatch}

// restartModel is the model each strategy works with.
var restartModel = map[string]string{
	RestartOverlap: ReusePort, RestartMigrate: ReusePort, RestartHandoff: ReusePort,
	RestartInherit: Shared, RestartDispatch: Single,
}

// defaultRestart is each model's natural strategy.
var defaultRestart = map[string]string{ReusePort: RestartOverlap, Shared: RestartInherit, Single: RestartDispatch}

// RestartEvent is one rolling-restart step: the instant the old process
// was told to stop (and, with reuseport-overlap, closed its socket).
type RestartEvent struct {
	Worker   int       `json:"worker"`
	OldPID   int       `json:"old_pid"`
	NewPID   int       `json:"new_pid"`
	At       time.Time `json:"at"`
	UnixNano int64     `json:"unix_nano"`
	Strategy string    `json:"strategy"`
}

// maxHistory bounds the restart events kept for /restarts.
const maxHistory = 100000

const migrateSysctl = "net/ipv4/tcp_migrate_req"

// enableMigration sets net.ipv4.tcp_migrate_req=1 for reuseport-migrate
// and proves on a scratch socket group that this kernel then moves a
// closing listener's queue. It returns the value to restore ("" when it
// changed nothing).
func enableMigration(lg *log.Logger) (was string, err error) {
	old, err := os.ReadFile("/proc/sys/" + migrateSysctl)
	if err != nil {
		return "", fmt.Errorf("-restart reuseport-migrate: this kernel has no net.ipv4.tcp_migrate_req (5.14+): %v", err)
	}
	was = strings.TrimSpace(string(old))
	if err := os.WriteFile("/proc/sys/"+migrateSysctl, []byte("1"), 0o644); err != nil {
		return "", fmt.Errorf("-restart reuseport-migrate: cannot set net.ipv4.tcp_migrate_req=1 (needs root): %v", err)
	}
	if was != "1" {
		lg.Printf("set net.ipv4.tcp_migrate_req=1 (was %s; restored on stop)", was)
	}
	lost, total, err := sockets.CheckMigration()
	if err != nil {
		return was, fmt.Errorf("-restart reuseport-migrate: checking migration: %v", err)
	}
	if lost > 0 {
		return was, fmt.Errorf("-restart reuseport-migrate: net.ipv4.tcp_migrate_req=1 but closing a listener lost %d of %d queued connections: this kernel does not migrate", lost, total)
	}
	return was, nil
}

// restoreMigration puts back what enableMigration changed.
func restoreMigration(was string) {
	if was != "" && was != "1" {
		os.WriteFile("/proc/sys/"+migrateSysctl, []byte(was), 0o644)
	}
}

// RollingRestart replaces every worker, one after another.
func (s *Supervisor) RollingRestart() {
	for id := range s.cfg.Workers {
		if s.isStopping() {
			return
		}
		s.replace(id)
	}
}

func (s *Supervisor) restartEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	next := 0
	for range t.C {
		if s.isStopping() {
			return
		}
		s.replace(next)
		next = (next + 1) % s.cfg.Workers
	}
}

// replace starts a successor for worker id, waits until it is ready
// (listening), then tells the old process to stop accepting and drain.
func (s *Supervisor) replace(id int) {
	s.restartMu.Lock()
	defer s.restartMu.Unlock()
	if s.isStopping() {
		return
	}
	np, err := s.spawn(id)
	if err != nil {
		s.log.Printf("rolling restart of worker %d: %v", id, err)
		return
	}
	s.mu.Lock()
	old := s.procs[id]
	s.procs[id] = np
	old.replaced = true
	s.draining = append(s.draining, old)
	s.rolling[id]++
	now := time.Now()
	ev := RestartEvent{Worker: id, OldPID: old.pid, NewPID: np.pid, At: now, UnixNano: now.UnixNano(), Strategy: s.cfg.Restart}
	s.history = append(s.history, ev)
	if len(s.history) > maxHistory {
		s.history = s.history[len(s.history)-maxHistory:]
	}
	s.watchers.Add(1)
	s.mu.Unlock()
	go s.watch(np)
	s.signal(old, syscall.SIGTERM)
	s.log.Printf("rolling restart (%s): worker %d pid %d -> %d", s.cfg.Restart, id, old.pid, np.pid)
}

// serveRestarts answers /restarts with the restart events as JSON.
func (s *Supervisor) serveRestarts(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	evs := append([]RestartEvent(nil), s.history...)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Strategy string         `json:"strategy"`
		Restarts []RestartEvent `json:"restarts"`
	}{s.cfg.Restart, evs})
}
