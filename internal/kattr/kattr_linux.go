// Package kattr attributes accepted TCP connections to the process and
// thread that accepted them, as the kernel saw it, for any server on
// this host. bcc's tcpaccept hooks the return of inet_csk_accept with a
// kretprobe; kernels without kprobes (CONFIG_KPROBES off) or that refuse
// BPF trampolines (fexit) cannot do that, so this program sits on the
// sys_exit tracepoint, in the accepting thread: on the return of
// accept(2) or accept4(2) it follows the new descriptor through the
// task's file table (task->files->fdt->fd[fd]->private_data->sk) to the
// socket, and for a connection on a watched port sends its 4-tuple, the
// accepting tgid and tid, command name and CPU through a ring buffer.
//
// Each program comes in two kinds. Typed (tp_btf, Linux 5.5+) takes the
// tracepoint's arguments as BTF pointers and loads from them directly;
// raw (a raw tracepoint, 4.17+) reads through bpf_probe_read_kernel. The
// typed one is loaded where the kernel takes it. On sys_exit, where the
// program runs on every system call of the host, that halves its cost
// (BenchmarkProbeCost: +87 against +157 ns per call here); what remains
// is mostly the kernel's own: any sys_exit program makes every task take
// the system-call slow path.
//
// It is written with cilium/ebpf's assembler (no clang); every offset
// it reads comes from the running kernel's BTF when it is loaded. Events
// the ring could not take are counted, never silently lost. Neither kind
// needs tracefs, and nothing is pinned: the program and its link go with
// the process. Accepts made through io_uring are not seen (nginx,
// HAProxy, Go and the target all call accept4).
package kattr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Thread is a thread as the kernel saw it accept a connection or send
// on one.
type Thread struct {
	PID  int    // thread group: the process
	TID  int    // the thread
	Comm string // the thread's command name
	CPU  int    // the CPU it ran on
}

// Acceptor is the thread that accepted a connection.
type Acceptor = Thread

// Tuple is a connection as its client sees it: the client's address and
// port, the server's address and port.
type Tuple struct {
	Client, Server netip.AddrPort
}

// Errors naming what is missing.
var (
	ErrNoPrivilege = errors.New("kernel attribution needs root (or CAP_BPF and CAP_PERFMON)")
	ErrNoBTF       = errors.New("kernel attribution needs the kernel's BTF (/sys/kernel/btf/vmlinux)")
	ErrNoTracing   = errors.New("kernel attribution needs BPF raw tracepoints (kernel 4.17+)")
)

// Tracer records the acceptor of every connection accepted on its
// ports. It reads the ring when asked (Accepted on a miss, Drain), never
// blocking: the caller's loop must not wait on it.
type Tracer struct {
	*probe
	mu    sync.Mutex
	table map[Tuple]entry
}

// entry is one accept: who, and when (kernel monotonic ns).
type entry struct {
	Acceptor
	at int64
}

// probe is one program on one tracepoint (typed or raw), its maps and its ring,
// and the clock that ties its events' timestamps to Go's.
type probe struct {
	objs struct {
		ports, events, missed *ebpf.Map
		prog                  *ebpf.Program
	}
	link   link.Link
	reader *ringbuf.Reader
	rec    ringbuf.Record
	comms  map[[16]byte]string // command names, interned
	// recorded counts events read; missed is read from the program's
	// counter (events the ring buffer had no room for).
	recorded atomic.Int64
	// base ties Go's monotonic clock to the kernel's (bpf_ktime_get_ns,
	// CLOCK_MONOTONIC): mono = baseMono + t.Sub(baseTime).
	baseTime time.Time
	baseMono int64
	port     uint16 // the first port watched
	typed    bool   // the program is tp_btf, not a raw tracepoint
	// tcomms are the command names of the threads whose events carry
	// none (sends), by pid<<32|tid, read from proc once per thread.
	tcomms map[uint64]string
	proc   procfs.FS
}

// ringSize is the ring buffer's size: at 80 bytes an event, room for
// about 200 000 accepts (or sends) between two reads.
const ringSize = 16 << 20

// event is what the programs write per accept or send.
type event struct {
	At       uint64 // bpf_ktime_get_ns
	PID, TID uint32
	CPU      uint32
	Family   uint16
	LPort    uint16 // the server's port (skc_num, host order)
	RPort    uint16 // the client's port (skc_dport, network order)
	_        uint16
	LAddr    [16]byte // server address
	RAddr    [16]byte // client address
	Comm     [16]byte
	Len      uint32 // bytes sent (serving events; 0 for accepts)
	_        uint32
}

const eventSize = int(unsafe.Sizeof(event{}))

// Start loads the accept program, attaches it and starts reading; ports
// are the server ports watched (at least one).
func Start(ports ...uint16) (*Tracer, error) {
	p, err := startProbe("accept", hook{"sys_exit", acceptTyped, acceptRaw}, ports)
	if err != nil {
		return nil, err
	}
	return &Tracer{probe: p, table: map[Tuple]entry{}}, nil
}

// A hook is a tracepoint and the two programs for it: typed, attached
// as tp_btf (Linux 5.5+), loads from the tracepoint's arguments as BTF
// pointers; raw, attached as a raw tracepoint (4.17+), reads through
// bpf_probe_read_kernel, a helper call per read. The typed one is tried
// first, and a kernel that refuses it gets the raw one.
type hook struct {
	tp         string
	typed, raw func(l layout, ports, events, missed int) asm.Instructions
}

// startProbe loads h's program as name, with its maps, and attaches it.
func startProbe(name string, h hook, ports []uint16) (*probe, error) {
	if len(ports) == 0 {
		return nil, errors.New("kernel attribution: no port to watch")
	}
	offs, err := kernelLayout()
	if err != nil {
		return nil, err
	}
	t := &probe{comms: map[[16]byte]string{}, tcomms: map[uint64]string{}, port: ports[0]}
	if t.proc, err = procfs.NewDefaultFS(); err != nil {
		return nil, err
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	t.baseTime, t.baseMono = time.Now(), ts.Nano()
	fail := func(err error) (*probe, error) {
		t.Close()
		return nil, err
	}
	if t.objs.ports, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbb_" + name + "_ports", Type: ebpf.Array, KeySize: 4, ValueSize: 1, MaxEntries: 1 << 16}); err != nil {
		return fail(privilege(err))
	}
	for _, p := range ports {
		if err := t.objs.ports.Put(uint32(p), uint8(1)); err != nil {
			return fail(err)
		}
	}
	if t.objs.events, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbb_" + name + "_ev", Type: ebpf.RingBuf, MaxEntries: ringSize}); err != nil {
		return fail(privilege(err))
	}
	if t.objs.missed, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lbb_" + name + "_miss", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
		return fail(privilege(err))
	}
	// LBBENCH_KATTR_RAW=1 skips the typed program, so a test can run the
	// raw one on a kernel that takes both.
	err = errors.New("typed programs off")
	if os.Getenv("LBBENCH_KATTR_RAW") == "" {
		err = t.attach(name, h.tp, true, h.typed(offs, t.objs.ports.FD(), t.objs.events.FD(), t.objs.missed.FD()))
	}
	if err != nil {
		if err := t.attach(name, h.tp, false, h.raw(offs, t.objs.ports.FD(), t.objs.events.FD(), t.objs.missed.FD())); err != nil {
			return fail(err)
		}
	}
	if t.reader, err = ringbuf.NewReader(t.objs.events); err != nil {
		return fail(err)
	}
	// The programs submit without waking a reader (a wake-up is an
	// interrupt on the sending CPU per event), so a read must never wait
	// for one: a deadline in the past makes it look and return.
	t.reader.SetDeadline(time.Unix(1, 0))
	return t, nil
}

// attach loads insns as the program of tracepoint tp, typed (tp_btf)
// or raw, and attaches it.
func (t *probe) attach(name, tp string, typed bool, insns asm.Instructions) error {
	spec := &ebpf.ProgramSpec{Name: "lbb_" + name, Type: ebpf.RawTracepoint, License: "GPL", Instructions: insns}
	if typed {
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceRawTp, tp
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoTracing, privilege(err))
	}
	var l link.Link
	if typed {
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
	} else {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
	}
	if err != nil {
		prog.Close()
		return fmt.Errorf("%w: attach to %s: %v", ErrNoTracing, tp, err)
	}
	t.objs.prog, t.link, t.typed = prog, l, typed
	return nil
}

// next reads the next event on the ring, if there is one now.
func (t *probe) next() (*event, bool) {
	for t.reader.AvailableBytes() > 0 {
		if err := t.reader.ReadInto(&t.rec); errors.Is(err, os.ErrDeadlineExceeded) {
			// The reader reports, once, that a former look found the
			// ring empty; the bytes available now are still to read.
			continue
		} else if err != nil {
			return nil, false
		}
		if len(t.rec.RawSample) >= eventSize {
			t.recorded.Add(1)
			return (*event)(unsafe.Pointer(&t.rec.RawSample[0])), true
		}
	}
	return nil, false
}

func privilege(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission) {
		// cilium/ebpf's text ends with "consider rlimit.RemoveMemlock",
		// advice for a library user that misleads a user of the command:
		// without privilege the fix is root, so say only that and the
		// kernel's errno.
		var errno unix.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("%w: %v", ErrNoPrivilege, errno)
		}
		return ErrNoPrivilege
	}
	return err
}

// layout is where the program reads: the syscall number in pt_regs, the
// way from the task to the socket, and struct sock_common's fields.
type layout struct {
	sysno                               uint32   // pt_regs: orig_ax (amd64), syscallno (arm64)
	sysnoSize                           asm.Size // its width: 8 bytes on amd64, 4 (s32) on arm64
	files, fdt, fdArray, private, sk    uint32   // task_struct.files, files_struct.fdt, fdtable.fd, file.private_data, socket.sk
	daddr, rcvSaddr, dport, num, family uint32
	v6daddr, v6rcvSaddr                 uint32
	hasV6                               bool
	accept, accept4                     int32 // syscall numbers
}

// kernelLayout finds, in the running kernel's BTF, the offsets of what
// the program reads.
func kernelLayout() (layout, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return layout{}, fmt.Errorf("%w: %v", ErrNoBTF, err)
	}
	l := layout{accept: unix.SYS_ACCEPT, accept4: unix.SYS_ACCEPT4}
	nr, ok := map[string]struct {
		field string
		size  asm.Size
	}{"amd64": {"orig_ax", asm.DWord}, "arm64": {"syscallno", asm.Word}}[runtime.GOARCH]
	sysno := nr.field
	l.sysnoSize = nr.size
	if !ok {
		return layout{}, fmt.Errorf("kernel attribution: not written for %s", runtime.GOARCH)
	}
	for _, f := range []struct {
		typ, name string
		dst       *uint32
		need      bool
	}{
		{"pt_regs", sysno, &l.sysno, true},
		{"task_struct", "files", &l.files, true}, {"files_struct", "fdt", &l.fdt, true},
		{"fdtable", "fd", &l.fdArray, true}, {"file", "private_data", &l.private, true}, {"socket", "sk", &l.sk, true},
		{"sock_common", "skc_daddr", &l.daddr, true}, {"sock_common", "skc_rcv_saddr", &l.rcvSaddr, true},
		{"sock_common", "skc_dport", &l.dport, true}, {"sock_common", "skc_num", &l.num, true},
		{"sock_common", "skc_family", &l.family, true},
		{"sock_common", "skc_v6_daddr", &l.v6daddr, false}, {"sock_common", "skc_v6_rcv_saddr", &l.v6rcvSaddr, false},
	} {
		var st *btf.Struct
		if err := spec.TypeByName(f.typ, &st); err != nil {
			return layout{}, fmt.Errorf("%w: struct %s: %v", ErrNoBTF, f.typ, err)
		}
		off, ok := fieldOffset(st, f.name)
		if !ok && f.need {
			return layout{}, fmt.Errorf("%w: struct %s has no %s", ErrNoBTF, f.typ, f.name)
		}
		*f.dst = off
		if f.name == "skc_v6_daddr" {
			l.hasV6 = ok
		}
	}
	if _, n := l.head(); n > headMax {
		return layout{}, fmt.Errorf("%w: struct sock_common's addresses, ports and family span %d bytes, not the few that lead it", ErrNoBTF, n)
	}
	// struct sock begins with its sock_common.
	var sk *btf.Struct
	if err := spec.TypeByName("sock", &sk); err != nil {
		return layout{}, fmt.Errorf("%w: struct sock: %v", ErrNoBTF, err)
	}
	if off, ok := fieldOffset(sk, "__sk_common"); !ok || off != 0 {
		return layout{}, fmt.Errorf("%w: struct sock does not begin with __sk_common", ErrNoBTF)
	}
	return l, nil
}

// fieldOffset finds a member by name, looking into anonymous unions and
// structs, and returns its offset in bytes.
func fieldOffset(t btf.Type, name string) (uint32, bool) {
	var members []btf.Member
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return 0, false
	}
	for _, m := range members {
		if m.Name == name {
			return uint32(m.Offset.Bytes()), true
		}
		if m.Name == "" {
			if off, ok := fieldOffset(m.Type, name); ok {
				return uint32(m.Offset.Bytes()) + off, true
			}
		}
	}
	return 0, false
}

// Event offsets, for the program.
var (
	offAt     = int16(unsafe.Offsetof(event{}.At))
	offPID    = int16(unsafe.Offsetof(event{}.PID))
	offCPU    = int16(unsafe.Offsetof(event{}.CPU))
	offFamily = int16(unsafe.Offsetof(event{}.Family))
	offLPort  = int16(unsafe.Offsetof(event{}.LPort))
	offRPort  = int16(unsafe.Offsetof(event{}.RPort))
	offLAddr  = int16(unsafe.Offsetof(event{}.LAddr))
	offRAddr  = int16(unsafe.Offsetof(event{}.RAddr))
	offComm   = int16(unsafe.Offsetof(event{}.Comm))
	offLen    = int16(unsafe.Offsetof(event{}.Len))
)

// acceptRaw runs on every system call's exit as a raw tracepoint, where
// every read is a helper call. r6: context, r7: the new sock, r8: the
// reserved event, r9: the returned descriptor.
func acceptRaw(l layout, ports, events, missed int) asm.Instructions {
	insns := asm.Instructions{
		// ctx: args[0] = struct pt_regs *, args[1] = the return value.
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R9, asm.R6, 8, asm.DWord),
		asm.JSLT.Imm(asm.R9, 0, "out"), // failed: nothing accepted
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord),
		// The syscall number: accept or accept4?
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, int32(l.sysnoSize.Sizeof())),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Imm(asm.R3, int32(l.sysno)),
		asm.FnProbeReadKernel.Call(),
		asm.LoadMem(asm.R1, asm.RFP, -8, l.sysnoSize),
		asm.JEq.Imm(asm.R1, l.accept4, "accepted"),
		asm.JNE.Imm(asm.R1, l.accept, "out"),
	}
	return append(insns, acceptedSock(l, ports, events, missed)...)
}

// acceptTyped is acceptRaw as a typed (tp_btf) program: the pt_regs
// argument is a BTF pointer, so the syscall number is one load, not a
// helper call, on every system call of the host.
func acceptTyped(l layout, ports, events, missed int) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R9, asm.R6, 8, asm.DWord),
		asm.JSLT.Imm(asm.R9, 0, "out"),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord),
		asm.JEq.Imm(asm.R7, 0, "out"),
		asm.LoadMem(asm.R1, asm.R7, int16(l.sysno), l.sysnoSize),
		asm.JEq.Imm(asm.R1, l.accept4, "accepted"),
		asm.JNE.Imm(asm.R1, l.accept, "out"),
	}
	return append(insns, acceptedSock(l, ports, events, missed)...)
}

// acceptedSock follows the descriptor accept returned (r9) to its sock
// and reports it: current->files->fdt->fd[ret]->private_data->sk, each
// step a probe read (an index into the descriptor array is not a typed
// load the verifier takes).
func acceptedSock(l layout, ports, events, missed int) asm.Instructions {
	// deref: *(u64 *)(r7 + off) into r7, through the stack; a null or a
	// failed read ends the program.
	deref := func(off uint32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 8),
			asm.Mov.Reg(asm.R3, asm.R7),
			asm.Add.Imm(asm.R3, int32(off)),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R7, asm.RFP, -8, asm.DWord),
			asm.JEq.Imm(asm.R7, 0, "out"),
		}
	}
	insns := asm.Instructions{
		asm.FnGetCurrentTask.Call().WithSymbol("accepted"),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
	insns = append(insns, deref(l.files)...)
	insns = append(insns, deref(l.fdt)...)
	insns = append(insns, deref(l.fdArray)...)
	insns = append(insns, asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R9),
		asm.And.Imm(asm.R1, 0xfffff), // a descriptor is small; bound it for the verifier's sake
		asm.LSh.Imm(asm.R1, 3),
		asm.Add.Reg(asm.R7, asm.R1),
	}...)
	insns = append(insns, deref(0)...)
	insns = append(insns, deref(l.private)...)
	insns = append(insns, deref(l.sk)...)
	return append(insns, report(l, ports, events, missed, reportAccept)...)
}

// headAt is where on the stack the programs keep the head of the
// sock_common they read; headMax is the most of it they read.
const (
	headAt  = -128
	headMax = 96
)

// head is the part of struct sock_common the programs read in one go:
// the IPv4 addresses, both ports and the family, which lead the struct
// in every kernel since 2.6.
func (l layout) head() (lo, n uint32) {
	lo, hi := l.daddr, l.daddr+4
	for _, f := range []struct{ off, size uint32 }{{l.rcvSaddr, 4}, {l.dport, 2}, {l.num, 2}, {l.family, 2}} {
		lo, hi = min(lo, f.off), max(hi, f.off+f.size)
	}
	return lo, hi - lo
}

// What report writes: an accept (with the thread's command name), or a
// send (the byte count in r9; the command name is left to user space,
// which reads it once per thread: copying it costs more than the rest
// of the event); typed says r7 is a BTF pointer the program may load
// from directly (tp_btf), so the sock is read without helper calls.
type reportKind struct{ sent, typed bool }

var (
	reportAccept    = reportKind{}
	reportSendRaw   = reportKind{sent: true}
	reportSendTyped = reportKind{sent: true, typed: true}
)

// report ends the programs: for the sock in r7 on a watched server port,
// it sends an event through the ring, or counts one the ring had no room
// for. Untyped, it reads the head of the sock in one probe read (twice
// for IPv6); typed, it loads each field. It submits without a wake-up:
// the reader looks when it needs an answer.
func report(l layout, ports, events, missed int, k reportKind) asm.Instructions {
	lo, n := l.head()
	// load reads size bytes of sock_common at off into r1.
	load := func(off uint32, size asm.Size) asm.Instruction {
		if k.typed {
			return asm.LoadMem(asm.R1, asm.R7, int16(off), size)
		}
		return asm.LoadMem(asm.R1, asm.RFP, int16(headAt+int32(off-lo)), size)
	}
	// field copies size bytes of sock_common at off into the event at dst.
	field := func(dst int16, off uint32, size asm.Size) asm.Instructions {
		return asm.Instructions{load(off, size), asm.StoreMem(asm.R8, dst, asm.R1, size)}
	}
	read := func(dstOff int16, size int32, srcOff uint32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R8),
			asm.Add.Imm(asm.R1, int32(dstOff)),
			asm.Mov.Imm(asm.R2, size),
			asm.Mov.Reg(asm.R3, asm.R7),
			asm.Add.Imm(asm.R3, int32(srcOff)),
			asm.FnProbeReadKernel.Call(),
		}
	}
	var insns asm.Instructions
	if !k.typed {
		insns = asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, headAt),
			asm.Mov.Imm(asm.R2, int32(n)),
			asm.Mov.Reg(asm.R3, asm.R7),
			asm.Add.Imm(asm.R3, int32(lo)),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "out"),
		}
	}
	insns = append(insns,
		// The server port (skc_num): is it watched?
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		load(l.num, asm.Half),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.Half),
		asm.LoadMapPtr(asm.R1, ports),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.JEq.Imm(asm.R1, 0, "out"),
		// An event.
		asm.LoadMapPtr(asm.R1, events),
		asm.Mov.Imm(asm.R2, int32(eventSize)),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JNE.Imm(asm.R0, 0, "fill"),
		// No room: count it.
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, missed),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Ja.Label("out"),

		asm.Mov.Reg(asm.R8, asm.R0).WithSymbol("fill"),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.R8, offAt, asm.R0, asm.DWord),
		asm.FnGetCurrentPidTgid.Call(),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.RSh.Imm(asm.R1, 32),
		asm.StoreMem(asm.R8, offPID, asm.R1, asm.Word),   // tgid
		asm.StoreMem(asm.R8, offPID+4, asm.R0, asm.Word), // tid: the low half
		asm.FnGetSmpProcessorId.Call(),
		asm.StoreMem(asm.R8, offCPU, asm.R0, asm.Word),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R8, offLen, asm.R1, asm.DWord), // Len and the padding
	)
	if k.sent {
		insns = append(insns, asm.StoreMem(asm.R8, offLen, asm.R9, asm.Word))
	}
	insns = append(insns, field(offLPort, l.num, asm.Half)...)
	insns = append(insns, field(offRPort, l.dport, asm.Half)...)
	insns = append(insns, field(offFamily, l.family, asm.Half)...)
	insns = append(insns, field(offLAddr, l.rcvSaddr, asm.Word)...)
	insns = append(insns, field(offRAddr, l.daddr, asm.Word)...)
	if l.hasV6 {
		// An IPv6 socket's addresses (v4-mapped ones too) are in its
		// v6 fields; user space picks by family.
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R8, offFamily, asm.Half),
			asm.JNE.Imm(asm.R1, unix.AF_INET6, "comm"),
		)
		insns = append(insns, read(offLAddr, 16, l.v6rcvSaddr)...)
		insns = append(insns, read(offRAddr, 16, l.v6daddr)...)
	}
	if k.sent {
		// No command name: the first byte 0 tells user space to look.
		insns = append(insns,
			asm.Mov.Imm(asm.R1, 0).WithSymbol("comm"),
			asm.StoreMem(asm.R8, offComm, asm.R1, asm.Byte),
		)
	} else {
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R8).WithSymbol("comm"),
			asm.Add.Imm(asm.R1, int32(offComm)),
			asm.Mov.Imm(asm.R2, 16),
			asm.FnGetCurrentComm.Call(),
		)
	}
	return append(insns,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Imm(asm.R2, ringbufNoWakeup),
		asm.FnRingbufSubmit.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// ringbufNoWakeup is BPF_RB_NO_WAKEUP.
const ringbufNoWakeup = 1

// drain reads every event on the ring now. t.mu is held.
func (t *Tracer) drain() {
	for ev, ok := t.next(); ok; ev, ok = t.next() {
		tu, a := t.decode(ev)
		t.table[tu] = entry{a, int64(ev.At)}
	}
}

func (t *probe) decode(ev *event) (Tuple, Thread) {
	var la, ra netip.Addr
	if ev.Family == unix.AF_INET6 {
		la, ra = netip.AddrFrom16(ev.LAddr).Unmap(), netip.AddrFrom16(ev.RAddr).Unmap()
	} else {
		la, ra = netip.AddrFrom4([4]byte(ev.LAddr[:4])), netip.AddrFrom4([4]byte(ev.RAddr[:4]))
	}
	rport := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&ev.RPort))[:])
	var comm string
	if ev.Comm[0] == 0 {
		comm = t.threadComm(ev.PID, ev.TID)
	} else if c, ok := t.comms[ev.Comm]; ok {
		comm = c
	} else {
		b := ev.Comm[:]
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		comm = string(b)
		t.comms[ev.Comm] = comm
	}
	return Tuple{Client: netip.AddrPortFrom(ra, rport), Server: netip.AddrPortFrom(la, ev.LPort)},
		Thread{PID: int(ev.PID), TID: int(ev.TID), Comm: comm, CPU: int(ev.CPU)}
}

// threadComm is the command name of thread tid of process pid, read
// through procfs the first time it is asked for (with the owner's lock
// held: once per thread). A thread gone by then gets its process's name,
// or "". The cache is emptied when it holds maxComms threads, so a long
// watch, which sees thread ids come and go, stays bounded.
func (t *probe) threadComm(pid, tid uint32) string {
	key := uint64(pid)<<32 | uint64(tid)
	if c, ok := t.tcomms[key]; ok {
		return c
	}
	if len(t.tcomms) >= maxComms {
		clear(t.tcomms)
	}
	c := ""
	if th, err := t.proc.Thread(int(pid), int(tid)); err == nil {
		c, _ = th.Comm()
	}
	if p, err := t.proc.Proc(int(pid)); c == "" && err == nil {
		c, _ = p.Comm()
	}
	t.tcomms[key] = c
	return c
}

// maxComms bounds the cache of threads' command names.
const maxComms = 1 << 16

// Mono is a time in the kernel's monotonic nanoseconds, the clock of the
// accepts' timestamps.
func (t *probe) Mono(at time.Time) int64 { return t.baseMono + at.Sub(t.baseTime).Nanoseconds() }

// staleMargin allows for the gap between the two clock reads that tie
// Go's clock to the kernel's. A 4-tuple comes back only after its
// TIME_WAIT (at least a second with tcp_tw_reuse), so an older accept
// of the same tuple is far older than this.
const staleMargin = time.Millisecond

// Accepted returns, and forgets, the acceptor of the connection t that
// began (connect) at notBefore (Mono), reading the ring if its accept is
// not in the table yet. Ask once the server has answered: it accepted
// before that, so its event is on the ring.
func (t *Tracer) Accepted(tu Tuple, notBefore int64) (Acceptor, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	notBefore -= staleMargin.Nanoseconds()
	e, ok := t.table[tu]
	if !ok || e.at < notBefore {
		t.drain()
		e, ok = t.table[tu]
	}
	if !ok {
		return Acceptor{}, false
	}
	delete(t.table, tu)
	return e.Acceptor, e.at >= notBefore
}

// Drain reads what is on the ring and forgets accepts older than
// maxAge: connections of other clients, or that never got an answer.
func (t *Tracer) Drain(maxAge time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drain()
	forgetOlder(t.table, t.Mono(time.Now())-maxAge.Nanoseconds(), func(e entry) int64 { return e.at })
}

// forgetOlder deletes the entries of table whose time (at) is before old.
func forgetOlder[V any](table map[Tuple]V, old int64, at func(V) int64) {
	for tu, e := range table {
		if at(e) < old {
			delete(table, tu)
		}
	}
}

// Event is one accept as the kernel reported it.
type Event struct {
	Tuple
	Acceptor
	At int64 // kernel monotonic nanoseconds
}

// Read reads every accept on the ring now, in order, for a caller that
// counts each one (a watch of the port) rather than asking about its own
// connections: these never enter the table Accepted looks in.
func (t *Tracer) Read() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Event
	for ev, ok := t.next(); ok; ev, ok = t.next() {
		tu, a := t.decode(ev)
		out = append(out, Event{tu, a, int64(ev.At)})
	}
	return out
}

// pending is how many accepts wait in the table (read, not asked for).
func (t *Tracer) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.table)
}

// Recorded is how many events were read.
func (t *probe) Recorded() int64 { return t.recorded.Load() }

// Missed is how many events the ring buffer had no room for.
func (t *probe) Missed() int64 {
	var n uint64
	if t.objs.missed != nil {
		t.objs.missed.Lookup(uint32(0), &n)
	}
	return int64(n)
}

// Close detaches the program and frees everything.
func (t *probe) Close() error {
	if t.link != nil {
		t.link.Close()
	}
	if t.reader != nil {
		t.reader.Close()
	}
	for _, c := range []interface{ Close() error }{t.objs.prog, t.objs.ports, t.objs.events, t.objs.missed} {
		c.Close() // a nil *ebpf.Program or *ebpf.Map closes as nothing
	}
	return nil
}

// isTyped says the program runs as tp_btf (typed loads), not as a raw
// tracepoint.
func (t *probe) isTyped() bool { return t.typed }

// Port is the first port watched.
func (t *probe) Port() uint16 { return t.port }
