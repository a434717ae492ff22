// Package kernel reads what the Linux kernel says about TCP and processes:
// the TcpExt counters, TIME_WAIT sockets, sysctls, per-process CPU time and
// a description of the host. It only reads under a /proc root, so
// fixtures test it; prometheus/procfs parses what it covers (sockstat,
// per-process stat, cpuinfo). Its TcpExt lacks counters the suite needs
// (TCPMigrateReqSuccess, TCPMigrateReqFailure), so netstat and snmp are
// read by name here.
package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// FS reads a /proc tree: the real one (Proc) or a fixture.
type FS struct {
	root string
	pfs  procfs.FS
	// net holds the net/ files: root, or for this machine the calling
	// thread's /proc/thread-self. /proc/self/net is the main thread's
	// network namespace, and a goroutine that entered another namespace
	// on a locked thread (netpath, loadgen -netns) may have ended on the
	// main thread, which Go then keeps, in that namespace.
	net    string
	netPfs procfs.FS
}

// NewFS returns an FS rooted at root (a /proc mount, or a copy).
func NewFS(root string) (FS, error) {
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return FS{}, err
	}
	return FS{root: root, pfs: pfs, net: root, netPfs: pfs}, nil
}

// Proc is this machine's /proc.
var Proc = func() FS {
	fs, err := NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return FS{root: procfs.DefaultMountPoint, net: procfs.DefaultMountPoint}
	}
	self := filepath.Join(procfs.DefaultMountPoint, "thread-self")
	if pfs, err := procfs.NewFS(self); err == nil {
		fs.net, fs.netPfs = self, pfs
	}
	return fs
}()

func (fs FS) path(p ...string) string { return filepath.Join(append([]string{fs.root}, p...)...) }

func (fs FS) netPath(name string) string { return filepath.Join(fs.net, "net", name) }

// TcpExt reads /proc/net/netstat and /proc/net/snmp of this machine; see FS.TcpExt.
func TcpExt() (map[string]uint64, error) { return Proc.TcpExt() }

// TcpExt returns the TcpExt counters of net/netstat (ListenOverflows,
// ListenDrops, TCPMigrateReqSuccess, ...), and the Tcp and Udp counters
// of net/snmp (RetransSegs, RcvbufErrors, ...) under "Tcp" + name and
// "Udp" + name.
func (fs FS) TcpExt() (map[string]uint64, error) {
	out := make(map[string]uint64, 160)
	if err := readPairs(fs.netPath("netstat"), "TcpExt:", "", out); err != nil {
		return nil, err
	}
	if err := readPairs(fs.netPath("snmp"), "Tcp:", "Tcp", out); err != nil {
		return nil, err
	}
	readPairs(fs.netPath("snmp"), "Udp:", "Udp", out) // UdpRcvbufErrors, UdpInErrors, ...
	return out, nil
}

// readPairs parses the header-line/value-line pairs of /proc/net/netstat
// and /proc/net/snmp for one prefix.
func readPairs(path, prefix, keyPrefix string, out map[string]uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], prefix) || !strings.HasPrefix(lines[i+1], prefix) {
			continue
		}
		names := strings.Fields(lines[i])[1:]
		vals := strings.Fields(lines[i+1])[1:]
		for j := range min(len(names), len(vals)) {
			v, err := strconv.ParseInt(vals[j], 10, 64)
			if err == nil {
				out[keyPrefix+names[j]] = uint64(v)
			}
		}
		return nil
	}
	return fmt.Errorf("%s: no %s lines", path, prefix)
}

// UDP returns the host's Udp counters from /proc/net/snmp (InDatagrams,
// RcvbufErrors, InErrors, ...).
func UDP() (map[string]uint64, error) { return Proc.UDP() }

// UDP reads fs's /proc/net/snmp Udp: lines.
func (fs FS) UDP() (map[string]uint64, error) {
	out := map[string]uint64{}
	if err := readPairs(fs.netPath("snmp"), "Udp:", "", out); err != nil {
		return nil, err
	}
	return out, nil
}

// TimeWait returns the number of TCP sockets in TIME_WAIT on the host
// (-1 when unknown).
func TimeWait() int64 { return Proc.TimeWait() }

// TimeWait is the TIME_WAIT count of net/sockstat.
func (fs FS) TimeWait() int64 {
	st, err := fs.netPfs.NetSockstat()
	if err != nil {
		return -1
	}
	for _, p := range st.Protocols {
		if p.Protocol == "TCP" && p.TW != nil {
			return int64(*p.TW)
		}
	}
	return -1
}

// Sysctls are the settings that change how connections are queued and
// spread; every run records them.
var Sysctls = []string{
	"net/core/somaxconn",
	"net/ipv4/tcp_max_syn_backlog",
	"net/ipv4/tcp_tw_reuse",
	"net/ipv4/tcp_migrate_req",
	"net/ipv4/tcp_syncookies",
	"net/ipv4/tcp_abort_on_overflow",
	"net/ipv4/ip_local_port_range",
}

// ReadSysctls reads Sysctls of this machine; see FS.ReadSysctls.
func ReadSysctls() map[string]string { return Proc.ReadSysctls() }

// ReadSysctls reads Sysctls; a missing one reads as "n/a".
func (fs FS) ReadSysctls() map[string]string {
	out := make(map[string]string, len(Sysctls))
	for _, s := range Sysctls {
		key := strings.ReplaceAll(s, "/", ".")
		b, err := os.ReadFile(fs.path("sys", s))
		if err != nil {
			out[key] = "n/a"
			continue
		}
		out[key] = strings.Join(strings.Fields(string(b)), " ")
	}
	return out
}

// ProcCPUSeconds returns user+system CPU seconds of pid on this machine.
func ProcCPUSeconds(pid int) (float64, error) { return Proc.ProcCPUSeconds(pid) }

// ProcCPUSeconds returns user+system CPU seconds of pid from its stat.
func (fs FS) ProcCPUSeconds(pid int) (float64, error) {
	p, err := fs.pfs.Proc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.CPUTime(), nil
}

// Host describes the machine a run happened on, as stable facts.
type Host struct {
	Kernel   string `json:"kernel"`
	CPUModel string `json:"cpu_model"`
	CPUs     int    `json:"cpus"`
	GoOS     string `json:"goos"`
	GoArch   string `json:"goarch"`
	Hostname string `json:"hostname"`
}

// ReadHost describes this machine.
func ReadHost() Host { return Proc.ReadHost() }

// ReadHost reads the kernel release, CPU model and CPU count.
func (fs FS) ReadHost() Host {
	h := Host{CPUs: runtime.NumCPU(), GoOS: runtime.GOOS, GoArch: runtime.GOARCH}
	if b, err := os.ReadFile(fs.path("sys", "kernel", "osrelease")); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.Hostname, _ = os.Hostname()
	if ci, err := fs.pfs.CPUInfo(); err == nil && len(ci) > 0 {
		h.CPUModel = ci[0].ModelName
	}
	return h
}

// Counters are the TcpExt and Tcp counters a run reports as deltas.
var Counters = []string{
	"ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPReqQFullDrop",
	"TCPMigrateReqSuccess", "TCPMigrateReqFailure", "TCPAbortOnData", "TCPAbortOnClose",
	"TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails", "TcpEstabResets", "TcpRetransSegs", "TcpOutRsts",
	"UdpInDatagrams", "UdpRcvbufErrors", "UdpInErrors", "UdpSndbufErrors",
}

// Snapshot is the kernel's view at one instant.
type Snapshot struct {
	Time     time.Time         `json:"-"`
	TimeWait int64             `json:"time_wait"`
	Counters map[string]uint64 `json:"counters"`
}

// Take reads a Snapshot of this machine.
func Take() Snapshot { return Proc.Take() }

// Take reads a Snapshot.
func (fs FS) Take() Snapshot {
	s := Snapshot{Time: time.Now(), TimeWait: fs.TimeWait(), Counters: map[string]uint64{}}
	if ext, err := fs.TcpExt(); err == nil {
		for _, k := range Counters {
			s.Counters[k] = ext[k]
		}
	}
	return s
}

// Observation is what the kernel said around a run.
type Observation struct {
	TimeWaitBefore int64             `json:"time_wait_before"`
	TimeWaitAfter  int64             `json:"time_wait_after"`
	Delta          map[string]int64  `json:"delta"`
	Sysctls        map[string]string `json:"sysctls"`
}

// Observe compares two snapshots of this machine.
func Observe(before, after Snapshot) Observation { return Proc.Observe(before, after) }

// Observe compares two snapshots and records the sysctls.
func (fs FS) Observe(before, after Snapshot) Observation {
	o := Observation{TimeWaitBefore: before.TimeWait, TimeWaitAfter: after.TimeWait,
		Delta: map[string]int64{}, Sysctls: fs.ReadSysctls()}
	for _, k := range Counters {
		o.Delta[k] = int64(after.Counters[k] - before.Counters[k])
	}
	return o
}

// Tree lists root and every process descended from it.
func (fs FS) Tree(root int) ([]int, error) {
	procs, err := fs.pfs.AllProcs()
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, p := range procs {
		if st, err := p.Stat(); err == nil {
			children[st.PPID] = append(children[st.PPID], p.PID)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// TreeCPUSeconds is the user+system CPU time of root and its descendants
// now, and the pids it summed.
func (fs FS) TreeCPUSeconds(root int) (float64, []int, error) {
	pids, err := fs.Tree(root)
	if err != nil {
		return 0, nil, err
	}
	var sum float64
	for _, pid := range pids {
		if s, err := fs.ProcCPUSeconds(pid); err == nil {
			sum += s
		}
	}
	return sum, pids, nil
}
