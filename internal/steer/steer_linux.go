// Package steer chooses which SO_REUSEPORT socket of a group gets a new
// connection, instead of the kernel's 4-tuple hash:
//
//   - cpu: a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) returning the
//     receiving CPU modulo the group size, so with one pinned worker per
//     CPU a connection is handled where its packets arrive;
//   - incoming-cpu: SO_INCOMING_CPU set on each listener (the kernel
//     prefers the listener whose CPU matches; fixed in 6.2);
//   - bpf-rr: an SK_REUSEPORT eBPF program picking sockets round-robin
//     from a REUSEPORT_SOCKARRAY;
//   - bpf-least: the same picking the worker with the fewest open
//     connections, from an mmap-able array the program increments when it
//     assigns a connection and the worker decrements when one closes, so
//     a stalled worker's unaccepted backlog counts against it.
//
// The eBPF programs are built with cilium/ebpf's assembler, so building
// lbbench needs no clang.
package steer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/udpwire"
	"github.com/lbbench/lbbench/internal/variant"
)

// Modes.
const (
	Hash        = "hash"
	CPU         = "cpu"
	IncomingCPU = "incoming-cpu"
	BPFRR       = "bpf-rr"
	BPFLeast    = "bpf-least"
	BPFFlow     = "bpf-flow" // UDP: by the flow id in the datagram (udpwire)
)

// Modes lists the steering modes.
var Modes = variant.List{Hash, CPU, IncomingCPU, BPFRR, BPFLeast, BPFFlow}

// UsesEBPF reports whether mode needs the eBPF objects.
func UsesEBPF(mode string) bool { return mode == BPFRR || mode == BPFLeast || mode == BPFFlow }

// Pinned reports whether mode needs one pinned worker per CPU.
func Pinned(mode string) bool { return mode == CPU || mode == IncomingCPU }

// AttachCPU attaches the classic BPF program "return the receiving CPU
// modulo n" to the reuseport group of fd.
func AttachCPU(fd, n int) error {
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtCPUID},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	})
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}

// SetIncomingCPU sets SO_INCOMING_CPU on a listening socket.
func SetIncomingCPU(fd, cpu int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_CPU, cpu); err != nil {
		return fmt.Errorf("SO_INCOMING_CPU: %w", err)
	}
	return nil
}

// Objects are the eBPF program and maps of bpf-rr and bpf-least. The
// supervisor loads them; workers get their fds.
type Objects struct {
	Prog  *ebpf.Program
	Socks *ebpf.Map // REUSEPORT_SOCKARRAY: worker id -> listening socket
	// Loads (bpf-least) is one element of n u64 counters: connections
	// assigned to each worker and not yet closed. It is mmap-able.
	Loads *ebpf.Map
	// Counter (bpf-rr) is the round-robin position.
	Counter *ebpf.Map
}

// ErrNoBPF wraps failures to load eBPF objects (no privilege, no kernel
// support).
var ErrNoBPF = errors.New("cannot load the steering eBPF program")

// Load creates the maps and loads the program for mode with n workers.
func Load(mode string, n int) (*Objects, error) {
	o := &Objects{}
	var err error
	o.Socks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbbench_socks", Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(n)})
	if err != nil {
		return nil, fmt.Errorf("%w: REUSEPORT_SOCKARRAY: %v (needs root or CAP_BPF, kernel 4.19+)", ErrNoBPF, err)
	}
	var insns asm.Instructions
	switch mode {
	case BPFRR:
		o.Counter, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbbench_rr", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
		if err == nil {
			insns = rrProgram(o.Counter.FD(), o.Socks.FD(), n)
		}
	case BPFLeast:
		o.Loads, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbbench_loads", Type: ebpf.Array, KeySize: 4, ValueSize: uint32(8 * n),
			MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE})
		if err == nil {
			insns = leastProgram(o.Loads.FD(), o.Socks.FD(), n)
		}
	case BPFFlow:
		insns = flowProgram(o.Socks.FD(), n)
	default:
		err = fmt.Errorf("mode %q has no eBPF program", mode)
	}
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("%w: %v", ErrNoBPF, err)
	}
	o.Prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lbbench_" + map[string]string{BPFRR: "rr", BPFLeast: "least", BPFFlow: "flow"}[mode],
		Type: ebpf.SkReuseport, License: "GPL", Instructions: insns,
	})
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("%w: %v", ErrNoBPF, err)
	}
	return o, nil
}

// Close releases the objects.
func (o *Objects) Close() {
	for _, c := range []interface{ Close() error }{o.Prog, o.Socks, o.Loads, o.Counter} {
		c.Close() // a nil *ebpf.Program or *ebpf.Map closes as nothing
	}
}

const skPass = 1

// selectAndPass: key (u32) at r10-8; select the socket, return SK_PASS
// whatever happened (an empty slot falls back to the kernel's hash).
func selectAndPass(socks int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// lookupFirst keeps the context in r6 and leaves in r0 a pointer to
// element 0 of the array map m (to "pass" if there is none).
func lookupFirst(m int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
	}
}

// rrProgram: key = counter++ % n. The counter is read and written
// without BPF_FETCH: on this kernel (6.18) an atomic fetch-add
// incremented the counter but left the old value out of the source
// register (every connection went to slot 1), so two SYNs handled at the
// same instant on two CPUs can take the same slot; sequential connections
// go round exactly.
func rrProgram(counter, socks, n int) asm.Instructions {
	insns := append(lookupFirst(counter),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.Mod.Imm(asm.R1, int32(n)),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
	)
	return append(insns, selectAndPass(socks)...)
}

// leastProgram: the index of the smallest of n counters (first on ties),
// incremented atomically, then selected.
func leastProgram(loads, socks, n int) asm.Instructions {
	insns := append(lookupFirst(loads),
		asm.Mov.Imm(asm.R7, 0),                    // best index
		asm.LoadMem(asm.R8, asm.R0, 0, asm.DWord), // best value
	)
	for i := 1; i < n; i++ {
		skip := fmt.Sprintf("skip%d", i)
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R0, int16(8*i), asm.DWord),
			asm.JSGE.Reg(asm.R3, asm.R8, skip), // signed: a count driven below 0 is still small
			asm.Mov.Reg(asm.R8, asm.R3),
			asm.Mov.Imm(asm.R7, int32(i)),
			asm.Mov.Imm(asm.R9, 0).WithSymbol(skip), // a landing pad for the jump
		)
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, -8, asm.R7, asm.Word),
		// loads[best]++ : the pointer plus the bounded index.
		asm.LSh.Imm(asm.R7, 3),
		asm.Add.Reg(asm.R0, asm.R7),
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, 0),
	)
	return append(insns, selectAndPass(socks)...)
}

// flowOffset is where the low 32 bits of a datagram's flow id are, from
// the start of the UDP header (where an SK_REUSEPORT program's data
// begins): the 8-byte header, then udpwire's.
const flowOffset = 8 + udpwire.FlowOffset + 4

// flowProgram: key = flow id % n, the flow id read from the datagram, so
// that a flow keeps its worker when its source port changes (NAT
// rebinding, QUIC connection migration). A datagram too short to hold
// one falls back to the kernel's hash.
func flowProgram(socks, n int) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, flowOffset),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.Word),
		asm.HostTo(asm.BE, asm.R1, asm.Word), // the id is big-endian
		asm.Mod.Imm(asm.R1, int32(n)),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
	}
	return append(insns, selectAndPass(socks)...)
}

// Join puts a worker's listening socket into the group's socket array at
// id and attaches prog to the group (the same program each time: setting
// it on any member replaces it for all).
func Join(socks *ebpf.Map, prog *ebpf.Program, id, fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD()); err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_EBPF: %w", err)
	}
	if err := socks.Update(uint32(id), uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("REUSEPORT_SOCKARRAY update: %w", err)
	}
	return nil
}

// Files returns the objects' fds as files to pass to a worker: program,
// socket array, loads (or the counter for bpf-rr).
func (o *Objects) Files() ([]*os.File, error) {
	var out []*os.File
	for _, fd := range []int{o.Prog.FD(), o.Socks.FD(), o.third().FD()} {
		nfd, err := unix.Dup(fd)
		if err != nil {
			return nil, err
		}
		out = append(out, os.NewFile(uintptr(nfd), "bpf"))
	}
	return out, nil
}

func (o *Objects) third() *ebpf.Map {
	if o.Loads == nil && o.Counter == nil {
		return o.Socks // bpf-flow has no third map: pass the array again
	}
	if o.Loads != nil {
		return o.Loads
	}
	return o.Counter
}
