// Package budget is what makes a comparison with a peer fair and what it
// measures of each side: the CPU budget (servers on one CPU set, their
// load generators on a disjoint one, equal threads), pinning, and the
// meters of a process tree's CPU time, system calls and peak memory.
package budget

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Budget is the CPU budget of a peer comparison: the side under test and
// its peer both run on Servers, their load generators on Clients, a set
// disjoint from it; both clients get as many threads as Clients has
// CPUs. Anything else is not a comparison.
type Budget struct {
	Servers, Clients []int
}

// SplitCPUs splits the CPUs this process may use: half for the servers,
// half for the clients (on 2 CPUs: server CPU 0, client CPU 1).
func SplitCPUs() (Budget, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return Budget{}, err
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return split(cpus)
}

// split gives the first half of cpus to the servers, the rest to the
// clients.
func split(cpus []int) (Budget, error) {
	if len(cpus) < 2 {
		return Budget{}, fmt.Errorf("%d CPU(s): a fair comparison needs at least 2, one for the servers and one for the clients", len(cpus))
	}
	half := len(cpus) / 2
	return Budget{Servers: cpus[:half], Clients: cpus[half:]}, nil
}

// Threads is the client thread count: wrk -t, loadgen GOMAXPROCS.
func (b Budget) Threads() int { return len(b.Clients) }

// String says it as taskset lists: "servers 0, clients 1".
func (b Budget) String() string {
	return "servers on CPU " + cpuList(b.Servers) + ", clients on CPU " + cpuList(b.Clients)
}

// Pin returns the command that runs bin with args on cpus.
func Pin(cpus []int, bin string, args ...string) (string, []string) {
	return "taskset", append([]string{"-c", cpuList(cpus), bin}, args...)
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}
