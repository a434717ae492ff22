package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// Crash is a process killed with SIGKILL during a run: a worker (in
// turn) or the supervisor, every Every from Every/2 into the measured
// part.
type Crash struct {
	Every  time.Duration
	Victim string // "worker" or "supervisor"
}

// crashVictims: a worker (the supervisor starts another), or the
// supervisor (its workers die with it; a new target is started, as a
// service manager would).
var crashVictims = []string{"worker", "supervisor"}

// crashCells: every target model whose workers are processes, under
// connection-per-request load at a fixed rate, long enough for three
// crashes.
func crashCells(p Params) []Cell {
	var out []Cell
	for _, v := range crashVictims {
		for _, m := range p.Models {
			if isServer(m) || inProc(m) {
				continue
			}
			c := Cell{
				Name:  fmt.Sprintf("Crash/model=%s/victim=%s/workers=%d/conn=close", m, v, p.CPUs),
				Model: m, Workers: p.CPUs, Conn: "close", Duration: max(3*crashEvery, p.Duration),
				Crash:   &Crash{Every: crashEvery, Victim: v},
				Rate:    crashRate,
				Clients: 300, Timeout: 2 * time.Second,
			}
			out = append(out, c)
		}
	}
	return out
}

// crasher kills processes of a running target on schedule and measures
// how long until a replacement serves.
type crasher struct {
	c       *Crash
	addr    string // the target's /workers endpoint host:port
	restart func() (*peers.Target, error)

	mu       sync.Mutex
	tg       *peers.Target
	kills    int
	recovery []time.Duration
	err      error
}

// run kills at start+Every/2, start+3*Every/2, ... until ctx is done.
func (k *crasher) run(ctx context.Context, start time.Time) {
	next := start.Add(k.c.Every / 2)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		var d time.Duration
		var err error
		if k.c.Victim == "supervisor" {
			d, err = k.killSupervisor(ctx)
		} else {
			d, err = k.killWorker(ctx, i)
		}
		k.mu.Lock()
		if err != nil {
			if k.err == nil && ctx.Err() == nil {
				k.err = err
			}
		} else {
			k.kills++
			k.recovery = append(k.recovery, d)
		}
		k.mu.Unlock()
		next = next.Add(k.c.Every)
	}
}

// workersDoc is what the target's /workers says.
type workersDoc struct {
	PID     int `json:"pid"`
	Workers []struct {
		ID       int    `json:"id"`
		PID      int    `json:"pid"`
		Accepted uint64 `json:"accepted"`
		Draining bool   `json:"draining"`
	} `json:"workers"`
}

func (k *crasher) workers() (*workersDoc, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + k.addr + "/workers")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var w workersDoc
	return &w, json.NewDecoder(resp.Body).Decode(&w)
}

// killWorker kills worker i mod N and waits until a new process serves
// as that worker (has accepted a connection).
func (k *crasher) killWorker(ctx context.Context, i int) (time.Duration, error) {
	w, err := k.workers()
	if err != nil {
		return 0, fmt.Errorf("crash: /workers: %w", err)
	}
	var live []int
	for _, x := range w.Workers {
		if !x.Draining && !slices.Contains(live, x.ID) {
			live = append(live, x.ID)
		}
	}
	if len(live) == 0 {
		return 0, fmt.Errorf("crash: no live worker")
	}
	slices.Sort(live)
	id := live[i%len(live)]
	victim := 0
	for _, x := range w.Workers {
		if x.ID == id && !x.Draining {
			victim = x.PID
		}
	}
	killed := time.Now()
	syscall.Kill(victim, syscall.SIGKILL)
	for ctx.Err() == nil {
		if w, err := k.workers(); err == nil {
			for _, x := range w.Workers {
				if x.ID == id && x.PID != victim && x.Accepted > 0 {
					return time.Since(killed), nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, ctx.Err()
}

// killSupervisor kills the target's supervisor and starts a new target
// on the same address, as a service manager would; recovery lasts until
// the new target's workers have accepted a connection.
func (k *crasher) killSupervisor(ctx context.Context) (time.Duration, error) {
	k.mu.Lock()
	old := k.tg
	k.mu.Unlock()
	killed := time.Now()
	old.Kill()
	var tg *peers.Target
	var err error
	for ctx.Err() == nil && time.Since(killed) < 5*time.Second {
		// The workers die with the supervisor a moment later: until their
		// sockets are gone, the new target refuses to join them.
		if tg, err = k.restart(); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if tg == nil {
		return 0, fmt.Errorf("crash: restart after killing the supervisor: %v", err)
	}
	k.mu.Lock()
	k.tg = tg
	k.mu.Unlock()
	for ctx.Err() == nil {
		if w, err := k.workers(); err == nil {
			for _, x := range w.Workers {
				if x.Accepted > 0 {
					return time.Since(killed), nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, ctx.Err()
}

// target is the target running now (a supervisor crash replaces it).
func (k *crasher) target() *peers.Target {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tg
}

// values are the crash figures of one sample, per crash. A zero is
// written as 1e-9, which benchstat's geomean survives.
func (k *crasher) values(doc *rundoc.Doc) ([]benchfmt.Value, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	if k.kills == 0 {
		return nil, fmt.Errorf("crash: no process was killed during the run")
	}
	n := float64(k.kills)
	rec := slices.Clone(k.recovery)
	slices.Sort(rec)
	return []benchfmt.Value{
		{Value: max(float64(doc.Errors)/n, 1e-9), Unit: "failed/crash"},
		{Value: max(float64(doc.ErrorsByKind["reset"])/n, 1e-9), Unit: "reset/crash"},
		{Value: max(float64(doc.ErrorsByKind["refused"])/n, 1e-9), Unit: "refused/crash"},
		{Value: rec[len(rec)/2].Seconds(), Unit: "recovery-sec"},
		{Value: n, Unit: "crashes"},
	}, nil
}
