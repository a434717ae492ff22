package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

// fakeSys writes a sysfs tree with one nodeN/cpulist per entry of nodes.
func fakeSys(t *testing.T, nodes []string) string {
	t.Helper()
	root := t.TempDir()
	for i, list := range nodes {
		d := filepath.Join(root, "devices", "system", "node", "node"+itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cpulist"), []byte(list+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func itoa(i int) string { return joinInts([]int{i}) }

func mustList(t *testing.T, s string) []int {
	t.Helper()
	l, err := parseCPUList(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPlanTopologies(t *testing.T) {
	for _, tc := range []struct {
		name            string
		cpuset          string   // what sched_getaffinity allows
		nodes           []string // sysfs nodeN/cpulist; none: no NUMA folder
		target, loadgen string
		shared          bool
		workers         []int
		clients         int
	}{
		{"1cpu", "0", nil, "0", "0", true, []int{1, 2}, 50},
		// This machine: make bench as it always ran.
		{"2cpus", "0-1", []string{"0-1"}, "0-1", "0-1", true, []int{1, 2, 4}, 50},
		{"3cpus", "0-2", nil, "0-2", "0-2", true, []int{1, 3, 6}, 50},
		{"4cpus", "0-3", []string{"0-3"}, "0-1", "2-3", false, []int{1, 2, 4}, 50},
		{"16cpus", "0-15", []string{"0-15"}, "0-7", "8-15", false, []int{1, 8, 16}, 128},
		{"64cpus", "0-63", nil, "0-31", "32-63", false, []int{1, 32, 64}, 512},
		{"128cpus", "0-127", []string{"0-127"}, "0-63", "64-127", false, []int{1, 64, 128}, 1024},
		{"cpuset-holes", "0-3,8-11", []string{"0-15"}, "0-3", "8-11", false, []int{1, 4, 8}, 64},
		// Hyperthread siblings numbered after the cores: each node's CPUs
		// are not contiguous; the split follows the nodes, not the numbers.
		{"two-nodes", "0-15", []string{"0-3,8-11", "4-7,12-15"}, "0-3,8-11", "4-7,12-15", false, []int{1, 8, 16}, 128},
		{"two-nodes-64", "0-63", []string{"0-31", "32-63"}, "0-31", "32-63", false, []int{1, 32, 64}, 512},
		// A cpuset inside node 0 only: one node in use, halves of it.
		{"two-nodes-cpuset-on-one", "0-7", []string{"0-7", "8-15"}, "0-3", "4-7", false, []int{1, 4, 8}, 64},
		{"four-nodes", "0-15", []string{"0-3", "4-7", "8-11", "12-15"}, "0-7", "8-15", false, []int{1, 8, 16}, 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeSys(t, tc.nodes)
			top := topology{CPUs: mustList(t, tc.cpuset), Node: readNodes(root)}
			p := planCPUs(top)
			if got := cpuList(p.Target); got != tc.target {
				t.Errorf("target CPUs %s, want %s", got, tc.target)
			}
			if got := cpuList(p.Loadgen); got != tc.loadgen {
				t.Errorf("loadgen CPUs %s, want %s", got, tc.loadgen)
			}
			if p.Shared != tc.shared {
				t.Errorf("shared %v, want %v", p.Shared, tc.shared)
			}
			if !slices.Equal(p.Workers, tc.workers) {
				t.Errorf("workers %v, want %v", p.Workers, tc.workers)
			}
			if p.Clients != tc.clients {
				t.Errorf("-c %d, want %d", p.Clients, tc.clients)
			}
			if !p.Shared {
				for _, c := range p.Target {
					if slices.Contains(p.Loadgen, c) {
						t.Errorf("CPU %d is in both sets", c)
					}
				}
				all := slices.Sorted(slices.Values(append(slices.Clone(p.Target), p.Loadgen...)))
				if !slices.Equal(all, top.CPUs) {
					t.Errorf("sets cover %v, the cpuset is %v", all, top.CPUs)
				}
			}
		})
	}
}

func TestPlanCPUList(t *testing.T) {
	for _, s := range []string{"0", "0-3", "0-3,8-11", "1,3,5", "0-1,4,6-7"} {
		if got := cpuList(mustList(t, s)); got != s {
			t.Errorf("%q read and said again: %q", s, got)
		}
	}
	for _, bad := range []string{"a", "3-1", "0-", "0,,1"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if l, err := parseCPUList("\n"); err != nil || l != nil {
		t.Errorf("empty list: %v, %v", l, err)
	}
}

func TestPlanPinning(t *testing.T) {
	shared := planCPUs(topology{CPUs: []int{0, 1}})
	if bin, args := onCPUs("bin/target", []string{"-x"}, shared, true); bin != "bin/target" || !slices.Equal(args, []string{"-x"}) {
		t.Errorf("shared CPUs pinned: %s %v", bin, args)
	}
	p := planCPUs(topology{CPUs: mustList(t, "0-3,8-11")})
	for _, tc := range []struct {
		target bool
		list   string
	}{{true, "0-3"}, {false, "8-11"}} {
		bin, args := onCPUs("bin/x", []string{"-y"}, p, tc.target)
		if want := []string{"-c", tc.list, "bin/x", "-y"}; bin != "taskset" || !slices.Equal(args, want) {
			t.Errorf("target=%v: %s %v, want taskset %v", tc.target, bin, args, want)
		}
	}
}

// parseMatrixFlags takes its defaults from the plan of this machine, and
// explicit flags still win.
func TestPlanMatrixDefaults(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"target", "loadgen"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "results")
	f, err := parseMatrixFlags([]string{"-bin", bin, "-results", dir}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := planCPUs(readTopology("/sys"))
	if !slices.Equal(f.Workers, p.Workers) || f.Clients != p.Clients || f.TargetCPUs != len(p.Target) {
		t.Errorf("defaults workers %v -c %d target CPUs %d, the plan says %v, %d, %d",
			f.Workers, f.Clients, f.TargetCPUs, p.Workers, p.Clients, len(p.Target))
	}
	if runtime.NumCPU() == 2 {
		// make bench on two CPUs, exactly as before the planner.
		if !slices.Equal(f.Workers, []int{1, 2, 4}) || f.Clients != 50 || !f.plan.Shared || f.TargetCPUs != 2 || f.CPUs != 2 {
			t.Errorf("2 CPUs: workers %v -c %d shared %v target CPUs %d CPUs %d, want [1 2 4] 50 true 2 2",
				f.Workers, f.Clients, f.plan.Shared, f.TargetCPUs, f.CPUs)
		}
	}
	f, err = parseMatrixFlags([]string{"-bin", bin, "-results", dir, "-workers", "3,1", "-c", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Workers, []int{3, 1}) || f.Clients != 7 {
		t.Errorf("explicit -workers 3,1 -c 7 gave %v and %d", f.Workers, f.Clients)
	}
	// -workers without -c: the connections follow the largest count.
	for _, tc := range []struct {
		workers string
		clients int
	}{{"1,64", 512}, {"2", 50}, {"16,1", 128}} {
		f, err = parseMatrixFlags([]string{"-bin", bin, "-results", dir, "-workers", tc.workers}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if f.Clients != tc.clients {
			t.Errorf("-workers %s: -c %d, want %d", tc.workers, f.Clients, tc.clients)
		}
	}
}
