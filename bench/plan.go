package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// topology is the machine as the planner sees it: the CPUs this process
// may run on (its cpuset, as sched_getaffinity reports it) and the NUMA
// node of each. It is data so the planner can be tested on machines this
// one is not.
type topology struct {
	CPUs []int       // sorted
	Node map[int]int // CPU -> NUMA node; a CPU absent from it is on node 0
}

// cpuPlan is how make bench uses a machine: where the target and loadgen
// run and the defaults that scale with the target's CPUs.
type cpuPlan struct {
	Target, Loadgen []int // the same list when Shared
	Shared          bool
	Workers         []int // default -workers: 1, N, 2N with N = len(Target)
	Clients         int   // default -c
}

// readTopology reads the CPUs this process may use and their NUMA nodes
// from sysRoot (normally /sys): sysRoot/devices/system/node/nodeN/cpulist.
// A machine without that folder (no NUMA, or a container hiding it) is
// one node.
func readTopology(sysRoot string) topology {
	var t topology
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		for i := range 1024 {
			if set.IsSet(i) {
				t.CPUs = append(t.CPUs, i)
			}
		}
	}
	if len(t.CPUs) == 0 {
		for i := range runtime.NumCPU() {
			t.CPUs = append(t.CPUs, i)
		}
	}
	t.Node = readNodes(sysRoot)
	return t
}

// readNodes maps each CPU to its node from sysRoot; nil when unreadable.
func readNodes(sysRoot string) map[int]int {
	dirs, _ := filepath.Glob(filepath.Join(sysRoot, "devices", "system", "node", "node[0-9]*"))
	var nodes map[int]int
	for _, d := range dirs {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "node"))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "cpulist"))
		if err != nil {
			continue
		}
		cpus, err := parseCPUList(string(b))
		if err != nil {
			continue
		}
		if nodes == nil {
			nodes = map[int]int{}
		}
		for _, c := range cpus {
			nodes[c] = n
		}
	}
	return nodes
}

// parseCPUList reads the kernel's list format: "0-3,8-11", "" for none.
func parseCPUList(s string) ([]int, error) {
	var out []int
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %v", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("cpu list %q: %v", s, err)
			}
		}
		if b < a {
			return nil, fmt.Errorf("cpu list %q: range %s runs backwards", s, part)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// planCPUs splits the machine. Below 4 CPUs the target and loadgen share
// every CPU (splitting 2 or 3 would leave one side a single CPU and
// halve the target's). From 4 on they are disjoint: with CPUs on two or
// more NUMA nodes the target gets the first half of the nodes and loadgen
// the rest, so neither side's traffic crosses the interconnect except
// the requests themselves; on one node the target gets the first half of
// the CPUs (in cpuset order, holes and all) and loadgen the rest.
func planCPUs(t topology) cpuPlan {
	cpus := slices.Sorted(slices.Values(t.CPUs))
	p := cpuPlan{Target: cpus, Loadgen: cpus, Shared: true}
	if len(cpus) >= 4 {
		byNode := map[int][]int{}
		for _, c := range cpus {
			byNode[t.Node[c]] = append(byNode[t.Node[c]], c)
		}
		if len(byNode) >= 2 {
			nodes := slices.Sorted(func(yield func(int) bool) {
				for n := range byNode {
					if !yield(n) {
						return
					}
				}
			})
			p.Target, p.Loadgen = nil, nil
			for i, n := range nodes {
				if i < len(nodes)/2 {
					p.Target = append(p.Target, byNode[n]...)
				} else {
					p.Loadgen = append(p.Loadgen, byNode[n]...)
				}
			}
		} else {
			p.Target, p.Loadgen = cpus[:len(cpus)/2], cpus[len(cpus)/2:]
		}
		p.Shared = false
	}
	n := len(p.Target)
	p.Workers = slices.Compact(slices.Sorted(slices.Values([]int{1, n, 2 * n})))
	p.Clients = defaultClients(p.Workers)
	return p
}

// defaultClients is the default -c: max(50, 8 x the largest worker
// count). With 8 keep-alive connections per worker at the most, the
// spread a model gives is its own; with fewer connections than a few per
// worker the imbalance measures how few balls fell into many bins.
func defaultClients(workers []int) int {
	return max(50, 8*slices.Max(workers))
}

// String says the partition as env.txt records it.
func (p cpuPlan) String() string {
	if p.Shared {
		return "shared (fewer than 4 CPUs: target and loadgen run on the same CPUs)"
	}
	return "disjoint (target on CPU " + cpuList(p.Target) + ", loadgen on CPU " + cpuList(p.Loadgen) + ")"
}

// cpuList says cpus as taskset -c reads them, ranges folded: "0-3,8-11".
func cpuList(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(cpus[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
