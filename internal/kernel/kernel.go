// Package kernel reads what the Linux kernel says about TCP and processes:
// the TcpExt counters, TIME_WAIT sockets, sysctls, per-process CPU time and
// a description of the host. It only reads /proc.
package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// TcpExt returns the TcpExt counters of /proc/net/netstat (ListenOverflows,
// ListenDrops, TCPMigrateReqSuccess, ...), and the Tcp counters of
// /proc/net/snmp (RetransSegs, ActiveOpens, ...) under "Tcp" + name.
func TcpExt() (map[string]uint64, error) {
	out := make(map[string]uint64, 160)
	if err := readPairs("/proc/net/netstat", "TcpExt:", "", out); err != nil {
		return nil, err
	}
	if err := readPairs("/proc/net/snmp", "Tcp:", "Tcp", out); err != nil {
		return nil, err
	}
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

// Sockstat returns the host's TCP socket counts from /proc/net/sockstat:
// "inuse", "orphan", "tw" (TIME_WAIT), "alloc".
func Sockstat() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)[1:]
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
				out[f[i]] = v
			}
		}
	}
	return out, nil
}

// TimeWait returns the number of TCP sockets in TIME_WAIT on the host.
func TimeWait() int64 {
	s, err := Sockstat()
	if err != nil {
		return -1
	}
	return s["tw"]
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

// ReadSysctls reads Sysctls; a missing one reads as "n/a".
func ReadSysctls() map[string]string {
	out := make(map[string]string, len(Sysctls))
	for _, s := range Sysctls {
		key := strings.ReplaceAll(s, "/", ".")
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			out[key] = "n/a"
			continue
		}
		out[key] = strings.Join(strings.Fields(string(b)), " ")
	}
	return out
}

// clockTicks is USER_HZ, which is 100 on every Linux architecture Go
// supports (the kernel fixes it for the /proc ABI).
const clockTicks = 100

// ProcCPUSeconds returns user+system CPU seconds of pid from /proc/PID/stat.
func ProcCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces; fields
	// after the last ')' are fixed. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return float64(ut+st) / clockTicks, nil
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

// ReadHost reads the kernel release, CPU model and CPU count.
func ReadHost() Host {
	h := Host{CPUs: runtime.NumCPU(), GoOS: runtime.GOOS, GoArch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.Hostname, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

// Counters are the TcpExt and Tcp counters a run reports as deltas.
var Counters = []string{
	"ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPReqQFullDrop",
	"TCPMigrateReqSuccess", "TCPMigrateReqFailure", "TCPAbortOnData", "TCPAbortOnClose",
	"TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails", "TcpEstabResets", "TcpRetransSegs", "TcpOutRsts",
}

// Snapshot is the kernel's view at one instant.
type Snapshot struct {
	Time     time.Time         `json:"-"`
	TimeWait int64             `json:"time_wait"`
	Counters map[string]uint64 `json:"counters"`
}

// Take reads a Snapshot.
func Take() Snapshot {
	s := Snapshot{Time: time.Now(), TimeWait: TimeWait(), Counters: map[string]uint64{}}
	if ext, err := TcpExt(); err == nil {
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

// Observe compares two snapshots.
func Observe(before, after Snapshot) Observation {
	o := Observation{TimeWaitBefore: before.TimeWait, TimeWaitAfter: after.TimeWait,
		Delta: map[string]int64{}, Sysctls: ReadSysctls()}
	for _, k := range Counters {
		o.Delta[k] = int64(after.Counters[k] - before.Counters[k])
	}
	return o
}
