package models

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/sockets"
)

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

// prepareRestarts sets and checks what the restart strategy needs:
// reuseport-migrate turns net.ipv4.tcp_migrate_req on (restored on stop)
// and proves on a scratch socket group that this kernel migrates.
func (s *Supervisor) prepareRestarts() error {
	if s.cfg.Restart != RestartMigrate {
		return nil
	}
	old, err := os.ReadFile("/proc/sys/" + migrateSysctl)
	if err != nil {
		return fmt.Errorf("-restart reuseport-migrate: this kernel has no net.ipv4.tcp_migrate_req (5.14+): %v", err)
	}
	s.migrateWas = strings.TrimSpace(string(old))
	if err := os.WriteFile("/proc/sys/"+migrateSysctl, []byte("1"), 0o644); err != nil {
		s.migrateWas = ""
		return fmt.Errorf("-restart reuseport-migrate: cannot set net.ipv4.tcp_migrate_req=1 (needs root): %v", err)
	}
	if s.migrateWas != "1" {
		s.log.Printf("set net.ipv4.tcp_migrate_req=1 (was %s; restored on stop)", s.migrateWas)
	}
	lost, total, err := sockets.CheckMigration()
	if err != nil {
		return fmt.Errorf("-restart reuseport-migrate: checking migration: %v", err)
	}
	if lost > 0 {
		return fmt.Errorf("-restart reuseport-migrate: net.ipv4.tcp_migrate_req=1 but closing a listener lost %d of %d queued connections: this kernel does not migrate", lost, total)
	}
	return nil
}

func (s *Supervisor) restoreRestarts() {
	if s.migrateWas != "" && s.migrateWas != "1" {
		os.WriteFile("/proc/sys/"+migrateSysctl, []byte(s.migrateWas), 0o644)
		s.migrateWas = ""
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
	s.handed[id] = 0
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
	old.cmd.Process.Signal(syscall.SIGTERM)
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

var _ = strconv.Itoa
