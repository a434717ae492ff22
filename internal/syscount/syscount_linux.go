// Package syscount counts system calls per process with an eBPF program
// on the sys_enter raw tracepoint, so a peer comparison can say how many
// system calls each side makes per request. A raw tracepoint needs no
// tracefs mount (perf's tracepoint events do, and perf mounts it), and
// the program is attached through a link that dies with its file
// descriptor: nothing is pinned, nothing outlives the process.
package syscount

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Counter counts system calls by process (tgid).
type Counter struct {
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
}

// maxProcesses bounds the processes counted at once; calls of processes
// beyond it are not counted (Missed says how many of those there were).
const maxProcesses = 16384

// ErrNoBPF wraps what stops the counter from loading: no privilege
// (root or CAP_BPF with CAP_PERFMON), or a kernel without raw tracepoints.
var ErrNoBPF = errors.New("cannot count system calls with eBPF")

// Start loads and attaches the counter.
func Start() (*Counter, error) {
	c := &Counter{}
	var err error
	c.counts, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbbench_syscalls", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: maxProcesses})
	if err != nil {
		return nil, fmt.Errorf("%w: %v (needs root)", ErrNoBPF, err)
	}
	c.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lbbench_sysenter", Type: ebpf.RawTracepoint, License: "GPL", Instructions: program(c.counts.FD()),
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %v", ErrNoBPF, err)
	}
	c.link, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: c.prog})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: attach to sys_enter: %v", ErrNoBPF, err)
	}
	return c, nil
}

// program: counts[tgid] += 1, inserting the key on a process's first call.
func program(counts int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, counts),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "insert"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		// First call of this process: insert 1. Two CPUs racing here
		// both try; the loser's call goes uncounted (BPF_NOEXIST).
		asm.Mov.Imm(asm.R1, 1).WithSymbol("insert"),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, counts),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 1), // BPF_NOEXIST
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// Count returns the system calls counted so far for each of pids (the
// processes of a tree), summed.
func (c *Counter) Count(pids ...int) uint64 {
	var n uint64
	for _, pid := range pids {
		var v uint64
		if err := c.counts.Lookup(uint32(pid), &v); err == nil {
			n += v
		}
	}
	return n
}

// Close detaches the program and frees the map.
func (c *Counter) Close() error {
	if c.link != nil {
		c.link.Close()
	}
	if c.prog != nil {
		c.prog.Close()
	}
	if c.counts != nil {
		c.counts.Close()
	}
	return nil
}
