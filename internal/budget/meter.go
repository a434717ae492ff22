package budget

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/syscount"
)

// Meter reads what a process tree has used: CPU time from /proc, system
// calls from the eBPF counter (when it could be loaded).
type Meter struct {
	FS    kernel.FS
	Calls *syscount.Counter // nil: system calls are not counted
}

// Usage is a process tree's CPU seconds and system calls so far.
type Usage struct {
	CPU   float64
	Calls uint64
}

// Tree reads the usage of root and its descendants now.
func (m *Meter) Tree(root int) (Usage, error) {
	cpu, pids, err := m.FS.TreeCPUSeconds(root)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{CPU: cpu}
	if m.Calls != nil {
		u.Calls = m.Calls.Count(pids...)
	}
	return u, nil
}

// Process reads the system calls of one (exited) process.
func (m *Meter) Process(pid int) uint64 {
	if m.Calls == nil {
		return 0
	}
	return m.Calls.Count(pid)
}

// Sub is the usage between two readings.
func (u Usage) Sub(v Usage) Usage { return Usage{CPU: u.CPU - v.CPU, Calls: u.Calls - v.Calls} }

// WatchPeak follows the peak resident memory (VmHWM) of a running
// process until the returned function is called, which returns it in
// bytes. The rusage of a child is no use here: a child that Go starts
// shares its parent's memory until exec, and the kernel keeps that
// high-water mark as the child's.
func WatchPeak(pid int) func() int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	read := func() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb*1024 > peak.Load() {
					peak.Store(kb * 1024)
				}
			}
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			read()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak.Load()
	}
}

// Close stops the system-call counter, if there is one.
func (m *Meter) Close() {
	if m.Calls != nil {
		m.Calls.Close()
	}
}
