package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbbench/lbbench/internal/results"
)

// This file is the scenario table: the one place to read what `make bench`
// measures, how each scenario is reported, and to add a scenario.

// A targetVariant is one way to run bin/target: what a scenario names
// by the benchmark's /model= key. Empty settings leave the target's
// defaults.
type targetVariant struct {
	Model                                  string // -model
	Dispatch, Accept, Steer, Restart, HTTP string
	UDP                                    bool // -proto udp
	InProc, Pin, Locality                  bool
}

// flags are bin/target's flags for the variant.
func (v targetVariant) flags() []string {
	var args []string
	if v.UDP {
		args = append(args, "-proto", "udp")
	}
	args = append(args, "-model", v.Model)
	for _, f := range []struct{ name, value string }{
		{"-dispatch", v.Dispatch}, {"-accept", v.Accept}, {"-steer", v.Steer}, {"-restart", v.Restart}, {"-http", v.HTTP},
	} {
		if f.value != "" {
			args = append(args, f.name, f.value)
		}
	}
	for _, f := range []struct {
		name string
		on   bool
	}{{"-inproc", v.InProc}, {"-pin", v.Pin}, {"-locality", v.Locality}} {
		if f.on {
			args = append(args, f.name)
		}
	}
	return args
}

// targetVariants are the target's variants a scenario can name.
var targetVariants = map[string]targetVariant{
	"single":           {Model: "single", Dispatch: "rr"},
	"single-least":     {Model: "single", Dispatch: "least"},
	"shared-netpoll":   {Model: "shared", Accept: "netpoll"},
	"shared-blocking":  {Model: "shared", Accept: "blocking"},
	"shared-exclusive": {Model: "shared", Accept: "exclusive"},
	"reuseport":        {Model: "reuseport"},
	// Steered reuseport (eBPF variants need root). Locality is measured
	// for all of them, the kernel's hash included.
	"reuseport-cpu":          {Model: "reuseport", Steer: "cpu"},
	"reuseport-incoming-cpu": {Model: "reuseport", Steer: "incoming-cpu"},
	"reuseport-bpf-rr":       {Model: "reuseport", Steer: "bpf-rr", Locality: true},
	"reuseport-bpf-least":    {Model: "reuseport", Steer: "bpf-least", Locality: true},
	"reuseport-hash":         {Model: "reuseport", Locality: true},
	"reuseport-hash-pin":     {Model: "reuseport", Pin: true, Locality: true},
	// Rolling-restart strategies (the churn scenario).
	"reuseport-overlap": {Model: "reuseport", Restart: "reuseport-overlap"},
	"reuseport-migrate": {Model: "reuseport", Restart: "reuseport-migrate"},
	"fd-handoff":        {Model: "reuseport", Restart: "fd-handoff"},
	"shared-inherit":    {Model: "shared", Restart: "shared-inherit"},
	"single-dispatch":   {Model: "single", Restart: "dispatch"},
	// Served by Go's net/http, and in-process workers (goroutines of one
	// process, GOMAXPROCS = workers).
	"reuseport-nethttp":        {Model: "reuseport", HTTP: "nethttp"},
	"shared-nethttp":           {Model: "shared", HTTP: "nethttp"},
	"inproc-reuseport":         {Model: "reuseport", InProc: true},
	"inproc-shared":            {Model: "shared", InProc: true},
	"inproc-reuseport-nethttp": {Model: "reuseport", HTTP: "nethttp", InProc: true},
	// UDP (the udp scenarios).
	"udp-reuseport":       {Model: "reuseport", UDP: true},
	"udp-shared-netpoll":  {Model: "shared", Accept: "netpoll", UDP: true},
	"udp-shared-blocking": {Model: "shared", Accept: "blocking", UDP: true},
	"udp-bpf-flow":        {Model: "reuseport", Steer: "bpf-flow", UDP: true},
}

// udpModels are what the udp scenario compares.
var udpModels = []string{"udp-reuseport", "udp-shared-netpoll", "udp-shared-blocking"}

// UDP load: the imbalance scenario's rate, and the rates of the loss
// ladder.
const (
	udpRate        = 20000
	udpRebindRate  = 5000
	udpRebindEvery = 200 * time.Millisecond
	udpRebindFlows = 16
)

var udpRateLadder = []float64{25000, 50000, 100000, 200000}

// localityModels are what the locality scenario compares: pinned
// workers, the kernel's hash against CPU steering.
var localityModels = []string{"reuseport-hash-pin", "reuseport-cpu", "reuseport-incoming-cpu"}

// serverScenarioModels are what the servers scenario compares: the real
// servers and the Go variants, against the target's reuseport (the base).
var serverScenarioModels = []string{"reuseport", "nginx-shared", "nginx-mutex", "nginx-reuseport", "haproxy", "haproxy-shards",
	"gohttp", "reuseport-nethttp", "inproc-reuseport", "inproc-shared", "node-rr", "node-none", "gunicorn", "gunicorn-reuseport", "uvicorn"}

// modelNames lists every model a scenario can name: the target's
// variants and the real servers.
func modelNames() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for m := range targetVariants {
			if !yield(m) {
				return
			}
		}
		for m := range serverModels {
			if !yield(m) {
				return
			}
		}
	})
}

// churnStrategies are the restart strategies the churn scenario compares.
var churnStrategies = []string{"reuseport-overlap", "reuseport-migrate", "fd-handoff", "shared-inherit", "single-dispatch"}

// steeringModels are the variants the steering scenario compares; the
// kernel's hash is the base.
var steeringModels = []string{"reuseport-hash", "reuseport-cpu", "reuseport-incoming-cpu", "reuseport-bpf-rr", "reuseport-bpf-least"}

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
	Clients  int // loadgen -c, over all generators
	// Generators is how many loadgen processes share each sample's load
	// (merged exactly into one sample).
	Generators int
	Count      int // samples per cell
	CPUs       int
	// TargetCPUs is how many CPUs the target may use: all of them below
	// 4 CPUs, the first half otherwise (loadgen has the rest).
	TargetCPUs int
	// Net is where cells run unless they say: loopback or netns (the
	// target and one generator per client namespace, NetClients of them,
	// with RSS emulation and optionally RFS and XPS).
	Net           string
	NetClients    int
	RSS, RFS, XPS bool
	// Src is loadgen's -src: the source addresses of the load.
	Src string
}

// Cell is one measured configuration: a target and a load on it.
type Cell struct {
	Name    string // benchmark name, without "Benchmark"
	Model   string
	Workers int
	Conn    string
	// Backlog > 0 is the target's listen backlog (0: the target's default).
	Backlog int
	// RestartEvery > 0 makes the target replace one worker, in turn, that often.
	RestartEvery time.Duration
	// Clients > 0 is loadgen's connections over all generators (0: the -c flag's).
	Clients int
	// Timeout > 0 is loadgen's connect and response timeout (0: loadgen's default).
	Timeout time.Duration
	// Poisson spaces an open loop's requests as Poisson arrivals.
	Poisson bool
	// TLSResume makes loadgen resume the last TLS session by ticket.
	TLSResume bool
	// Work is CPU burnt per request by the server's handler.
	Work time.Duration
	// Kernel attributes by the kernel (BPF), as every cell of a group
	// with a real server is.
	Kernel bool
	// TLS makes the server terminate TLS with a throwaway certificate
	// made for the sample, which loadgen verifies (https://).
	TLS bool
	// Flows > 0 makes a UDP cell: that many flows (loadgen -flows);
	// RebindEvery changes their source ports.
	Flows       int
	RebindEvery time.Duration
	// Net is the path: loopback or netns ("": the -net flag's);
	// Steering the netns path's RFS and XPS (nil: the flags').
	Net      string
	Steering *Steering
	// Stall pauses worker 0 (SIGSTOP) from After for For.
	Stall *Stall
	// Crash kills a worker (or the supervisor) with SIGKILL, at Every.
	Crash *Crash
	// Restarts asks the target for its restart list, so loadgen counts
	// what each restart cost.
	Restarts bool
	// Rate > 0 runs an open loop at this fixed rate.
	Rate float64
	// RateFraction > 0 runs an open loop at this fraction of the capacity
	// measured for the slowest model in the scenario's first round.
	RateFraction float64
	Duration     time.Duration
	// Hold opens a crowd of idle connections before the load
	// (connections.go).
	Hold *Hold
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
	Measure func(p Params, res *resultsFile) error
	// Sections are how the scenario's records are reported.
	Sections []results.Section
	// Rounds > 0 caps the scenario's rounds below -count.
	Rounds int
}

// The figures most sections show.
var (
	throughput    = results.Metric{Unit: "req/s", Label: "throughput (req/s)", Summary: true}
	p99           = results.Metric{Unit: "p99-sec", Label: "p99 latency", Summary: true}
	connImbalance = results.Metric{Unit: "conn-imbalance", Label: "connection imbalance (max/mean)", Summary: true}
	reqImbalance  = results.Metric{Unit: "req-imbalance", Label: "request imbalance (max/mean)", Summary: true}
	shareCharts   = []results.Chart{{Kind: results.Share}, {Kind: results.Spectrum}}
)

// remapMetrics are the remap sections' columns: the measured fraction
// moved, and what the two hashes predict.
var remapMetrics = []results.Metric{
	{Unit: "moved-fraction", Label: "measured"}, {Unit: "scale-fraction", Label: "reciprocal_scale"}, {Unit: "modulo-fraction", Label: "modulo"},
}

// Parameters scenarios state in their descriptions too.
const (
	heavyWork      = 100 * time.Microsecond
	churnEvery     = 100 * time.Millisecond
	churnRate      = 3000
	openFraction   = 0.7
	crashEvery     = time.Second
	crashRate      = 2000
	stallFractions = 3 // the middle third of a run
)

var scenarios = []Scenario{
	{
		Name:  "matrix",
		About: "every model, 1, N and 2N workers (N = the target's CPUs), new connection per request and keep-alive",
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
		Sections: []results.Section{
			{
				Name: "Accept", Filter: "/conn:close", Title: "New connection per request",
				About: "Every model at 1, N and 2N workers (N = the target's CPUs); -c connections (50 unless the box is big) in a closed loop, each request on a new connection, " +
					"so every request is an accept: this is where the models differ most.",
				Rows:    "/workers@num",
				Metrics: []results.Metric{throughput, p99, connImbalance},
				Charts:  append([]results.Chart{{Kind: results.Scaling, Unit: "req/s", Label: "throughput (req/s)", X: "workers"}}, shareCharts...),
			},
			{
				Name: "Accept", Filter: "/conn:keepalive", Title: "Keep-alive",
				About: "The same with 50 keep-alive connections: they are spread once, at connect; " +
					"request imbalance follows from that spread and from how busy each worker's connections keep it.",
				Rows:    "/workers@num",
				Metrics: []results.Metric{throughput, p99, reqImbalance},
				Charts:  append([]results.Chart{{Kind: results.Scaling, Unit: "req/s", Label: "throughput (req/s)", X: "workers"}}, shareCharts...),
			},
		},
	},
	{
		Name:  "cpu-heavy",
		About: "a handler that burns " + heavyWork.String() + " of CPU per request, N workers",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, m := range p.Models {
					c := cell("CPUHeavy", m, p.CPUs, conn, p.Duration)
					c.Work = heavyWork
					out = append(out, c)
				}
			}
			return out
		},
		Sections: []results.Section{{
			Name: "CPUHeavy", Title: "A CPU-heavy handler",
			About: "Every request burns " + heavyWork.String() + " of CPU in the worker (`-work`), N workers: " +
				"a worker busy with a request cannot accept, so models that keep accepting on a busy worker fall behind.",
			Rows:    "/conn,/workers@num",
			Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
			Charts:  shareCharts,
		}},
	},
	{
		Name:  "stalled",
		About: "worker 0 paused (SIGSTOP) for the middle third of a run, new connection per request, N workers",
		Cells: func(p Params) []Cell { return stalledCells("Stalled", p.Models, p.CPUs, p.Duration) },
		Sections: []results.Section{{
			Name: "Stalled", Title: "A stalled worker",
			About: "Worker 0 is paused with SIGSTOP for the middle third of each run (as a long GC pause or a blocking call would), " +
				"a new connection per request, N workers: models whose queue belongs to one worker strand the connections queued on it.",
			Rows:    "/conn,/workers@num",
			Metrics: []results.Metric{throughput, p99, connImbalance},
			Charts:  shareCharts,
		}},
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
		Sections: []results.Section{
			{
				Name: "Steering", Title: "Steered reuseport",
				About: "The kernel's 4-tuple hash against steering by the receiving CPU (cBPF, pinned workers), SO_INCOMING_CPU, " +
					"and eBPF round-robin or least-loaded, one worker per CPU. Locality: the share of connections a worker handled on the CPU their packets arrived on.",
				Rows: "/conn,/workers@num",
				Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive"),
					{Unit: "locality", Label: "locality", Summary: true}},
				Charts: shareCharts,
			},
			{
				Name: "SteeringStalled", Title: "Steered reuseport with a stalled worker",
				About: "The same steering modes with worker 0 paused for the middle third of each run, a new connection per request.",
				Rows:  "/conn,/workers@num", Metrics: []results.Metric{throughput, p99, connImbalance},
				Charts: shareCharts,
			},
		},
	},
	{
		Name:  "churn",
		About: fmt.Sprintf("rolling restarts every %v under %d new connections per second, by restart strategy, N workers", churnEvery, churnRate),
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, m := range churnStrategies {
				c := cell("Churn", m, p.TargetCPUs, "close", max(3*time.Second, p.Duration))
				c.RestartEvery = churnEvery
				c.Clients, c.Timeout = 300, 2*time.Second
				c.Rate = churnRate
				c.Restarts = true
				out = append(out, c)
			}
			return out
		},
		Sections: []results.Section{{
			Name: "Churn", Title: "Rolling restarts under load",
			About: fmt.Sprintf("One worker replaced every %v (the successor listens first, then the old process drains) "+
				"while loadgen opens %d connections per second; what each strategy loses per restart.", churnEvery, churnRate),
			Rows: "/conn,/workers@num",
			Metrics: []results.Metric{
				{Unit: "failed/restart", Label: "failed requests per restart", Summary: true},
				{Unit: "resets/1M-conn", Label: "resets per million connections"},
				{Unit: "p99-restart-sec", Label: "p99 in seconds with a restart", Summary: true},
			},
			Kernel: []string{"TCPMigrateReqSuccess", "TCPMigrateReqFailure", "ListenDrops", "TcpEstabResets"},
			Charts: []results.Chart{{Kind: results.Bars, Unit: "failed/restart", Label: "failed requests per restart"}},
		}},
	},
	{
		Name: "crash",
		About: fmt.Sprintf("a worker, or the supervisor, killed with SIGKILL every %v under %d new connections per second, every model, N workers",
			crashEvery, crashRate),
		Cells: crashCells,
		Sections: []results.Section{{
			Name: "Crash", Title: "Crashes under load",
			About: fmt.Sprintf("SIGKILL every %v while loadgen opens %d connections per second: victim=worker kills one worker "+
				"(in turn; the supervisor starts a new one), victim=supervisor kills the supervisor, whose workers die with it, and a new target "+
				"is started on the same address, as systemd would. Recovery: from the kill until the replacement has accepted a connection.",
				crashEvery, crashRate),
			Rows: "/victim,/workers@num",
			Metrics: []results.Metric{
				{Unit: "failed/crash", Label: "failed requests per crash", Summary: true},
				{Unit: "reset/crash", Label: "resets per crash"},
				{Unit: "refused/crash", Label: "refused per crash"},
				{Unit: "recovery-sec", Label: "time to recover", Summary: true},
			},
			Kernel: []string{"ListenDrops", "TcpEstabResets", "TcpOutRsts"},
			Charts: []results.Chart{{Kind: results.Bars, Unit: "failed/crash", Label: "failed requests per crash"}},
		}},
	},
	{
		Name: "servers",
		About: "nginx (accept_mutex on and off, reuseport), HAProxy (one socket, a socket per thread), N Go net/http processes, " +
			"the target served by net/http and by in-process workers, Node.js cluster (rr, none), gunicorn (one socket, --reuse-port), uvicorn, " +
			"against the target's reuseport; N workers; also CPU-heavy and with a worker paused",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, m := range serverScenarioModels {
					out = append(out, cell("Servers", m, p.CPUs, conn, p.Duration))
				}
			}
			for _, conn := range p.Conns {
				for _, m := range serverScenarioModels {
					c := cell("ServersCPUHeavy", m, p.CPUs, conn, p.Duration)
					c.Work = heavyWork
					out = append(out, c)
				}
			}
			return append(out, stalledCells("ServersStalled", serverScenarioModels, p.CPUs, p.Duration)...)
		},
		Sections: []results.Section{
			{
				Name: "Servers", Title: "Real servers",
				About: "nginx 1.22 (nginx-shared: one socket, EPOLLEXCLUSIVE, its default; nginx-mutex: accept_mutex on; nginx-reuseport), " +
					"HAProxy 2.6 with a thread per worker (haproxy: one socket; haproxy-shards: a socket per thread), N independent Go net/http " +
					"processes on one SO_REUSEPORT port (gohttp), the target served by net/http, and its workers as goroutines of one process (inproc-*), " +
					"Node.js 20 cluster (node-rr: the primary accepts and hands connections round-robin, Node's default on Linux; node-none: the workers " +
					"accept on the shared socket), gunicorn 20.1 sync workers on the master's socket (gunicorn-reuseport: the same socket with SO_REUSEPORT " +
					"set before the fork, still one queue), uvicorn --workers N; N workers, all attributed by the kernel to the thread that sent each " +
					"response (who served, not who accepted). A worker is a process, HAProxy's a thread, an in-process one its accept loop.",
				Rows:    "/conn,/workers@num",
				Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
				Charts:  shareCharts,
			},
			{
				Name: "ServersCPUHeavy", Title: "Real servers, CPU-heavy handler",
				About: "The same servers with a handler that burns " + heavyWork.String() + " of CPU per request " +
					"(nginx: a Lua handler spinning on CLOCK_MONOTONIC; HAProxy, whose Lua has no running clock: a loop calibrated at start, ~110 us; Go: a busy loop).",
				Rows:    "/conn,/workers@num",
				Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
				Charts:  shareCharts,
			},
			{
				Name: "ServersStalled", Title: "Real servers, a worker paused",
				About: "One worker process paused with SIGSTOP for the middle third of each run, a new connection per request. " +
					"HAProxy's threads and in-process workers cannot be paused one at a time, so they are not in this table.",
				Rows:    "/conn,/workers@num",
				Metrics: []results.Metric{throughput, p99, connImbalance},
				Charts:  shareCharts,
			},
		},
	},
	{
		Name: "locality",
		About: "on the netns path with RSS emulation: pinned workers, the kernel's hash against CPU steering (cBPF, SO_INCOMING_CPU), " +
			"with RSS alone and with RFS and XPS; N workers, unpinned clients",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, path := range []struct {
				name string
				st   Steering
			}{{"rss", Steering{}}, {"rss+rfs+xps", Steering{RFS: true, XPS: true}}} {
				for _, conn := range p.Conns {
					for _, m := range localityModels {
						c := cell("Locality", m, p.TargetCPUs, conn, p.Duration)
						c.Name = fmt.Sprintf("Locality/model=%s/path=%s/workers=%d/conn=%s", m, path.name, p.TargetCPUs, conn)
						c.Net, c.Steering = netNetns, &path.st
						out = append(out, c)
					}
				}
			}
			return out
		},
		Sections: []results.Section{{
			Name: "Locality", Title: "Locality on a real network path",
			About: "The target in a network namespace, one loadgen in each of two client namespaces (unpinned), flows spread over the CPUs " +
				"by their hash as a multiqueue NIC's RSS would (RPS on every receive queue of the target's veths); workers pinned one per CPU. " +
				"Locality: the share of connections a worker handled on the CPU their packets arrived on (the kernel's SO_INCOMING_CPU against " +
				"the worker's CPU at accept). path=rss+rfs+xps adds RFS (a flow follows the CPU its socket is read on) and XPS.",
			Rows: "/path,/conn,/workers@num",
			Metrics: []results.Metric{{Unit: "locality", Label: "locality", Summary: true}, throughput, p99,
				withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
		}},
	},
	{
		Name:  "netpath",
		About: "the cost of the path: the same cell on loopback and on the netns path (RSS emulation), N workers",
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, conn := range p.Conns {
				for _, path := range []string{netLoopback, netNetns} {
					c := cell("NetPath", "reuseport", p.CPUs, conn, p.Duration)
					c.Name = fmt.Sprintf("NetPath/model=%s/workers=%d/conn=%s", path, p.CPUs, conn)
					c.Net = path
					out = append(out, c)
				}
			}
			return out
		},
		Sections: []results.Section{{
			Name: "NetPath", Title: "What the network path costs",
			About: "The target's reuseport model on loopback against the same target in a network namespace reached over veth pairs from " +
				"two client namespaces, with RSS emulation: the columns are the path, not a model.",
			Rows:    "/conn,/workers@num",
			Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
		}},
	},
	{
		Name: "udp",
		About: fmt.Sprintf("datagrams over N workers: imbalance against the number of flows at %d datagrams/s, beside uniform hashing's expectation; "+
			"then loss on a ladder of rates, 64N flows", udpRate),
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, k := range []int{1, 8, 64} {
				for _, m := range udpModels {
					c := udpCell("UDP", m, p.CPUs, k*p.CPUs, udpRate, p.Duration)
					out = append(out, c)
				}
			}
			for _, r := range udpRateLadder {
				for _, m := range udpModels {
					c := udpCell("UDPLoss", m, p.CPUs, 64*p.CPUs, r, p.Duration)
					c.Name = fmt.Sprintf("UDPLoss/model=%s/rate=%.0f/workers=%d", m, r, p.CPUs)
					out = append(out, c)
				}
			}
			return out
		},
		Sections: []results.Section{
			{
				Name: "UDP", Title: "UDP: flows over workers",
				About: fmt.Sprintf("Request and reply datagrams at %d per second, F flows (each its own source port), N workers. "+
					"A reuseport group picks a socket per datagram by the 4-tuple hash, so each flow sticks to one worker and few flows spread badly: "+
					"uniform hashing's expected max/mean is the second line of each row (computed: 100000 simulated throws). "+
					"The shared socket hands datagrams to whichever worker reads first.", udpRate),
				Rows: "/flows@num,/workers@num",
				Metrics: []results.Metric{
					{Unit: "req-imbalance", Label: "datagram imbalance (max/mean)", Summary: true},
					{Unit: "hash-imbalance", Label: "uniform hashing's expectation", Keep: true},
					p99, {Unit: "loss-ratio", Label: "loss ratio"},
				},
				Charts: shareCharts,
			},
			{
				Name: "UDPLoss", Title: "UDP: loss as the rate climbs",
				About: "64N flows at rising rates: the share of datagrams lost (the target's receive buffers overflowing), and the replies per second. " +
					"On a shared machine loadgen and the target compete for the same CPUs; the self-check marks samples loadgen could not send.",
				Rows:    "/rate@num,/workers@num",
				Metrics: []results.Metric{{Unit: "loss-ratio", Label: "loss ratio", Summary: true, Keep: true}, {Unit: "req/s", Label: "replies/s"}, p99},
			},
		},
	},
	{
		Name: "udp-rebind",
		About: fmt.Sprintf("%d flows whose source ports change every %v (NAT rebinding): the kernel's hash against flow-id steering (bpf-flow)",
			udpRebindFlows, udpRebindEvery),
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, m := range []string{"udp-reuseport", "udp-bpf-flow"} {
				c := udpCell("UDPRebind", m, p.CPUs, udpRebindFlows, udpRebindRate, max(p.Duration, 2*time.Second))
				c.RebindEvery = udpRebindEvery
				out = append(out, c)
			}
			return out
		},
		Sections: []results.Section{{
			Name: "UDPRebind", Title: "UDP: a flow's source port changes",
			About: fmt.Sprintf("%d flows at %d datagrams/s, each given a new source port every %v, as NAT rebinding or QUIC migration does. "+
				"The kernel's hash sends the flow to another worker, which holds none of its state; bpf-flow reads the flow id in the datagram "+
				"(as QUIC servers route by connection ID) and keeps it.", udpRebindFlows, udpRebindRate, udpRebindEvery),
			Rows: "/flows@num,/workers@num",
			Metrics: []results.Metric{
				{Unit: "first-worker-share", Label: "share of datagrams reaching their flow's first worker", Summary: true},
				{Unit: "multiworker-flows", Label: "flows answered by more than one worker"},
				p99,
			},
		}},
	},
	{
		Name:    "udp-resize",
		About:   "the fraction of fixed UDP flows that reach another socket when a reuseport group grows from N to N+1",
		Measure: measureUDPRemap,
		Sections: []results.Section{{
			Name: "UDPRemap", Title: "UDP: flows moved when a worker joins",
			About: fmt.Sprintf("The fraction of %d fixed source ports whose datagrams reach another socket when a UDP reuseport group grows from N to N+1: "+
				"a moved flow's next datagram lands on a worker without its state.", remapTuples),
			Rows: "/workers@num", MetricsAsColumns: true,
			Metrics: remapMetrics,
		}},
	},
	{
		Name:    "binding",
		About:   "what the articles claim about binding, measured: who may join a reuseport group, SO_REUSEADDR, wildcard against specific address, unicast against multicast and broadcast",
		Measure: measureBinding,
		Sections: []results.Section{{
			Name: "Binding", Title: "Binding: what the articles claim, what this kernel does",
			About: "One row per claim (`case=`), each the figure measured on fresh sockets on a free loopback port, beside the figure the claim predicts (`claimed-`): " +
				"1 of `bind-refused` is EADDRINUSE, `stray-share` the share of new connections a same-user stray took from N workers (1/(N+1)), " +
				"`specific-wins` the fraction of traffic that reached 127.0.0.1:P rather than 0.0.0.0:P for 127.0.0.1 (and the wildcard for 127.0.0.2), " +
				"`copies/datagram` the copies received over N reuseport sockets per datagram sent.",
			Rows: "/case", MetricsAsColumns: true,
			Metrics: bindingMetrics(),
		}},
	},
	{
		Name:    "remap",
		About:   "the fraction of fixed 4-tuples that change socket when a reuseport group grows from N to N+1",
		Measure: measureRemap,
		Sections: []results.Section{{
			Name: "Remap", Title: "Hash remapping when a listener joins",
			About: fmt.Sprintf("The fraction of %d fixed client 4-tuples that land on another socket when a reuseport group grows from N to N+1 listeners, "+
				"against modulo hashing (1 - 1/(N+1)) and the kernel's reciprocal_scale (index = hash * N >> 32), which moves about half whatever N is.", remapTuples),
			Rows: "/workers@num", MetricsAsColumns: true,
			Metrics: remapMetrics,
		}},
	},
	{
		Name:  "open-loop",
		About: fmt.Sprintf("Poisson arrivals at %.0f%% of the slowest model's capacity, new connection per request, N workers", 100*openFraction),
		Cells: func(p Params) []Cell {
			var out []Cell
			for _, m := range p.Models {
				c := cell("OpenLoop", m, p.CPUs, "close", max(2*time.Second, p.Duration))
				c.RateFraction = openFraction
				c.Poisson, c.Clients = true, 500
				out = append(out, c)
			}
			return out
		},
		Sections: []results.Section{{
			Name: "OpenLoop", Title: "Latency at an equal offered load",
			About: fmt.Sprintf("Poisson arrivals at %.0f%% of the slowest model's closed-loop capacity (measured at the start; the rate is in every sample's JSON), "+
				"a new connection per request: latency from each request's intended send time, so no model is flattered by sending less.", 100*openFraction),
			Rows:    "/conn,/workers@num",
			Metrics: []results.Metric{p99, {Unit: "p999-sec", Label: "p99.9 latency"}, connImbalance},
			Charts:  []results.Chart{{Kind: results.Spectrum}},
		}},
	},
}

func withFilter(m results.Metric, filter string) results.Metric {
	m.Filter = filter
	return m
}

// sections lists every scenario's report sections, in table order.
func sections() []results.Section {
	var out []results.Section
	for _, s := range scenarios {
		out = append(out, s.Sections...)
	}
	return out
}

// udpCell is a UDP cell: flows at rate datagrams per second.
func udpCell(prefix, model string, workers, flows int, rate float64, d time.Duration) Cell {
	return Cell{
		Name:  fmt.Sprintf("%s/model=%s/flows=%d/workers=%d", prefix, model, flows, workers),
		Model: model, Workers: workers, Flows: flows, Rate: rate, Duration: d,
	}
}

func cell(prefix, model string, workers int, conn string, d time.Duration) Cell {
	return Cell{
		Name:  fmt.Sprintf("%s/model=%s/workers=%d/conn=%s", prefix, model, workers, conn),
		Model: model, Workers: workers, Conn: conn, Duration: d,
	}
}

// stalledCells: worker 0 paused (SIGSTOP) for the middle third of a run
// of at least 3 s, a new connection per request; for the models whose
// workers are processes.
func stalledCells(prefix string, models []string, workers int, d time.Duration) []Cell {
	d = max(3*time.Second, d)
	var out []Cell
	for _, m := range models {
		if !canStall(m) {
			continue
		}
		c := cell(prefix, m, workers, "close", d)
		c.Stall = &Stall{After: d / stallFractions, For: d / stallFractions}
		c.Timeout = 2 * time.Second
		out = append(out, c)
	}
	return out
}

// group is a cell's name without its model: cells of one group are
// interleaved.
func (c Cell) group() string {
	parts := strings.Split(c.Name, "/")
	var keep []string
	for _, p := range parts {
		if !strings.HasPrefix(p, "model=") {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, "/") + "/workers=" + strconv.Itoa(c.Workers)
}

func scenarioByName(name string) (Scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}
