package peers

import (
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
