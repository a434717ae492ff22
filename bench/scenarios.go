package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file is the scenario table: the one place to read what `make bench`
// measures, and to add a scenario.

// modelFlags maps each model variant a scenario can name to bin/target
// flags. The variant is the benchmark's /model= key.
var modelFlags = map[string][]string{
	"single":           {"-model", "single", "-dispatch", "rr"},
	"single-least":     {"-model", "single", "-dispatch", "least"},
	"shared-netpoll":   {"-model", "shared", "-accept", "netpoll"},
	"shared-blocking":  {"-model", "shared", "-accept", "blocking"},
	"shared-exclusive": {"-model", "shared", "-accept", "exclusive"},
	"reuseport":        {"-model", "reuseport"},
	// Steered reuseport (eBPF variants need root).
	"reuseport-cpu":          {"-model", "reuseport", "-steer", "cpu"},
	"reuseport-incoming-cpu": {"-model", "reuseport", "-steer", "incoming-cpu"},
	"reuseport-bpf-rr":       {"-model", "reuseport", "-steer", "bpf-rr"},
	"reuseport-bpf-least":    {"-model", "reuseport", "-steer", "bpf-least"},
	// Rolling-restart strategies (the churn scenario).
	"reuseport-overlap": {"-model", "reuseport", "-restart", "reuseport-overlap"},
	"reuseport-migrate": {"-model", "reuseport", "-restart", "reuseport-migrate"},
	"fd-handoff":        {"-model", "reuseport", "-restart", "fd-handoff"},
	"shared-inherit":    {"-model", "shared", "-restart", "shared-inherit"},
	"single-dispatch":   {"-model", "single", "-restart", "dispatch"},
}

// churnStrategies are the restart strategies the churn scenario compares.
var churnStrategies = []string{"reuseport-overlap", "reuseport-migrate", "fd-handoff", "shared-inherit", "single-dispatch"}

// steeringModels are the variants the steering scenario compares; plain
// reuseport (the kernel's hash) is the base.
var steeringModels = []string{"reuseport", "reuseport-cpu", "reuseport-incoming-cpu", "reuseport-bpf-rr", "reuseport-bpf-least"}

// defaultModels are the variants measured unless MODELS= says otherwise,
// in the order they appear as benchstat columns (the first is the base).
var defaultModels = []string{"reuseport", "single", "shared-netpoll", "shared-blocking", "shared-exclusive"}

// Params are what the command line sets for every scenario.
type Params struct {
	Models   []string
	Workers  []int // the matrix's worker counts
	Conns    []string
	Duration time.Duration
	Warmup   time.Duration
	Clients  int // loadgen -c
	Count    int // samples per cell
	CPUs     int
	// TargetCPUs is how many CPUs the target may use: all of them below
	// 4 CPUs, the first half otherwise (loadgen has the rest).
	TargetCPUs int
}

// Cell is one measured configuration: a target and a load on it.
type Cell struct {
	Name    string // benchmark name, without "Benchmark"
	Model   string
	Workers int
	Conn    string
	Target  []string // extra bin/target flags
	Load    []string // extra bin/loadgen flags
	// Stall pauses worker 0 (SIGSTOP) from After for For.
	Stall *Stall
	// Restarts asks the target for its restart list, so loadgen counts
	// what each restart cost.
	Restarts bool
	// Rate > 0 runs an open loop at this fixed rate.
	Rate float64
	// RateFraction > 0 runs an open loop at this fraction of the capacity
	// measured for the slowest model in the scenario's first round.
	RateFraction float64
	Duration     time.Duration
}

// Stall is a worker paused during a run.
type Stall struct{ After, For time.Duration }

// Scenario expands into cells; cells that differ only in Model are
// measured side by side, interleaved within each round.
type Scenario struct {
	Name  string
	About string
	Cells func(p Params) []Cell
	// Measure, for scenarios that are not a target under load, writes
	// its own results.
	Measure func(p Params, res *results) error
}

var scenarios = []Scenario{
	{
		Name:  "matrix",
		About: "every model, 1, N and 2N workers (N = CPUs), new connection per request and keep-alive",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, w := range p.Workers {
					for _, m := range p.Models {
						out = append(out, cell("Accept", m, w, conn, p.Duration))
					}
				}
			}
			return out
		},
	},
	{
		Name:  "cpu-heavy",
		About: "a handler that burns 100µs of CPU per request, N workers",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, m := range p.Models {
					c := cell("CPUHeavy", m, p.CPUs, conn, p.Duration)
					c.Target = []string{"-work", "100us"}
					out = append(out, c)
				}
			}
			return out
		},
	},
	{
		Name:  "stalled",
		About: "worker 0 paused (SIGSTOP) for the middle third of a run, new connection per request, N workers",
		Cells: func(p Params) []Cell { return stalledCells("Stalled", p.Models, p.CPUs, p.Duration) },
	},
	{
		Name:  "steering",
		About: "reuseport steered by CPU (cBPF, SO_INCOMING_CPU) and by eBPF (round-robin, least loaded) against the kernel's hash, N pinned-capable workers; also with worker 0 paused",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, m := range steeringModels {
					out = append(out, cell("Steering", m, p.TargetCPUs, conn, p.Duration))
				}
			}
			return append(out, stalledCells("SteeringStalled", steeringModels, p.TargetCPUs, p.Duration)...)
		},
	},
	{
		Name:  "churn",
		About: "rolling restarts every 100ms under 3000 new connections per second, by restart strategy, N workers",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, m := range churnStrategies {
				c := cell("Churn", m, p.TargetCPUs, "close", max(3*time.Second, p.Duration))
				c.Target = []string{"-restart-every", "100ms"}
				c.Load = []string{"-c", "300", "-timeout", "2s"}
				c.Rate = 3000
				c.Restarts = true
				out = append(out, c)
			}
			return out
		},
	},
	{
		Name:    "remap",
		About:   "the fraction of fixed 4-tuples that change socket when a reuseport group grows from N to N+1",
		Measure: measureRemap,
	},
	{
		Name:  "open-loop",
		About: "Poisson arrivals at 70% of the slowest model's capacity, new connection per request, N workers",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, m := range p.Models {
				c := cell("OpenLoop", m, p.CPUs, "close", max(2*time.Second, p.Duration))
				c.RateFraction = 0.7
				c.Load = []string{"-poisson", "-c", "500"}
				out = append(out, c)
			}
			return out
		},
	},
}

func cell(prefix, model string, workers int, conn string, d time.Duration) Cell {
	return Cell{
		Name:  fmt.Sprintf("%s/model=%s/workers=%d/conn=%s", prefix, model, workers, conn),
		Model: model, Workers: workers, Conn: conn, Duration: d,
	}
}

// stalledCells: worker 0 paused (SIGSTOP) for the middle third of a run
// of at least 3 s, a new connection per request.
func stalledCells(prefix string, models []string, workers int, d time.Duration) []Cell {
	d = max(3*time.Second, d)
	var out []Cell
	for _, m := range models {
		c := cell(prefix, m, workers, "close", d)
		c.Stall = &Stall{After: d / 3, For: d / 3}
		c.Load = []string{"-timeout", "2s"}
		out = append(out, c)
	}
	return out
}

// group is a cell's name without its model: cells of one group are
// interleaved.
func (c Cell) group() string {
	prefix, _, _ := strings.Cut(c.Name, "/")
	return prefix + "/workers=" + strconv.Itoa(c.Workers) + "/conn=" + c.Conn
}

func scenarioByName(name string) (Scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}
