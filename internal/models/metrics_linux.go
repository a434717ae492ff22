package models

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/metrics"
	"github.com/lbbench/lbbench/internal/nativehist"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

var (
	workerLabels = []string{"model", "worker", "pid"}

	descAccepted = prometheus.NewDesc("lbbench_target_accepted_connections_total",
		"Connections accepted by (or, in the single model, handed to) each worker process.", workerLabels, nil)
	descRequests = prometheus.NewDesc("lbbench_target_requests_total",
		"HTTP responses written by each worker process.", workerLabels, nil)
	descOpen = prometheus.NewDesc("lbbench_target_open_connections",
		"Connections each worker process holds open now.", workerLabels, nil)
	descCPU = prometheus.NewDesc("lbbench_target_worker_cpu_seconds_total",
		"User and system CPU time of each worker process, from /proc.", workerLabels, nil)
	descRestarts = prometheus.NewDesc("lbbench_target_worker_restarts_total",
		"Times a worker process exited and was started again with a new pid.", []string{"model", "worker"}, nil)
	descDuration = prometheus.NewDesc("lbbench_target_request_duration_seconds",
		"Time from a request's bytes arriving to its response being written, all workers.", []string{"model"}, nil)
	descQueue = prometheus.NewDesc("lbbench_target_accept_queue_connections",
		"Established connections waiting in a listening socket's accept queue (sock_diag); one socket per worker with reuseport.", []string{"model", "socket"}, nil)
	descBacklog = prometheus.NewDesc("lbbench_target_accept_queue_limit_connections",
		"Accept-queue limit (listen backlog) of each listening socket.", []string{"model", "socket"}, nil)
	descOverflows = prometheus.NewDesc("lbbench_target_host_listen_overflows_total",
		"Host-wide TcpExt ListenOverflows: connections dropped because an accept queue was full.", nil, nil)
	descDrops = prometheus.NewDesc("lbbench_target_host_listen_drops_total",
		"Host-wide TcpExt ListenDrops: SYNs dropped at a listening socket for any reason.", nil, nil)
	descLocality = prometheus.NewDesc("lbbench_target_connection_locality_total",
		"Accepted connections by whether their packets arrive on the CPU the worker accepted them on (SO_INCOMING_CPU vs getcpu).",
		[]string{"model", "worker", "pid", "locality"}, nil)
	descRolling = prometheus.NewDesc("lbbench_target_rolling_restarts_total",
		"Rolling-restart steps (a worker replaced by a new process on SIGHUP or -restart-every).", []string{"model", "worker", "strategy"}, nil)
	descLastRestart = prometheus.NewDesc("lbbench_target_last_rolling_restart_timestamp_seconds",
		"When the last rolling-restart step told the old process to stop (0: none yet). All instants: /restarts.", []string{"model"}, nil)
	descInfo = prometheus.NewDesc("lbbench_target_info",
		"The target's configuration; always 1.", []string{"model", "accept", "dispatch", "steer", "workers"}, nil)
)

// collector reads the workers' shared-memory counters, /proc and sock_diag
// at scrape time, so the hot path never touches Prometheus.
type collector struct {
	s       *Supervisor
	created time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descRequests, descOpen, descCPU, descRestarts,
		descDuration, descQueue, descBacklog, descOverflows, descDrops, descLocality, descRolling, descLastRestart, descInfo} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	model := s.cfg.Model
	var hist nativehist.Counts
	s.mu.Lock()
	for _, r := range s.retired {
		w, pid := strconv.Itoa(r.id), strconv.Itoa(r.pid)
		ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(r.accepted), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(r.requests), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, r.cpuSeconds, model, w, pid)
	}
	hist.Add(&s.retiredHist)
	for _, p := range append(append([]*proc(nil), s.procs...), s.draining...) {
		if p == nil || p.ctl < 0 {
			continue
		}
		w, pid := strconv.Itoa(p.id), strconv.Itoa(p.pid)
		slot := s.region.Slot(p.slot)
		ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(slot.Load(shm.Accepted)), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(slot.Load(shm.Requests)), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(slot.Load(shm.Open)), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descLocality, prometheus.CounterValue, float64(slot.Load(shm.LocalConns)), model, w, pid, "local")
		ch <- prometheus.MustNewConstMetric(descLocality, prometheus.CounterValue, float64(slot.Load(shm.RemoteConns)), model, w, pid, "remote")
		if cpu, err := kernel.ProcCPUSeconds(p.pid); err == nil {
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, cpu, model, w, pid)
		}
		slot.AddHistogramTo(&hist)
	}
	for id, n := range s.restarts {
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(n), model, strconv.Itoa(id))
		ch <- prometheus.MustNewConstMetric(descRolling, prometheus.CounterValue, float64(s.rolling[id]), model, strconv.Itoa(id), s.cfg.Restart)
	}
	last := 0.0
	if n := len(s.history); n > 0 {
		last = float64(s.history[n-1].UnixNano) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(descLastRestart, prometheus.GaugeValue, last, model)
	sockets := s.listenerSockets()
	s.mu.Unlock()

	ch <- metrics.NewCountsHistogram(descDuration, &hist, c.created, model)
	c.collectQueues(ch, sockets)
	if ext, err := kernel.TcpExt(); err == nil {
		ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(ext["ListenOverflows"]))
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(ext["ListenDrops"]))
	}
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
		model, s.acceptName(), s.dispatchName(), s.cfg.Steer, strconv.Itoa(s.cfg.Workers))
}

// listenerSockets maps the inodes of this target's listening sockets to
// their socket label. s.mu is held.
func (s *Supervisor) listenerSockets() map[uint64]string {
	out := map[uint64]string{}
	if s.lfd >= 0 {
		if ino, err := sockets.Inode(s.lfd); err == nil {
			out[ino] = "0"
		}
		return out
	}
	for _, p := range s.procs {
		if p != nil && p.inode != 0 {
			out[p.inode] = strconv.Itoa(p.id)
		}
	}
	return out
}

func (c *collector) collectQueues(ch chan<- prometheus.Metric, mine map[uint64]string) {
	ap, _ := sockets.ParseAddr(c.s.cfg.Addr)
	ls, err := sockets.Listeners(ap.Port())
	if err != nil {
		return
	}
	for _, l := range ls {
		label, ok := mine[l.Inode]
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(l.Queue), c.s.cfg.Model, label)
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(l.Backlog), c.s.cfg.Model, label)
	}
}

// listenMetrics binds the metrics address before any worker starts, so a
// taken port fails start-up cleanly.
func (s *Supervisor) listenMetrics() error {
	if s.cfg.MetricsAddr == "" || s.cfg.MetricsAddr == "off" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return metricsListenError(s.cfg.MetricsAddr, err)
	}
	s.metricsLn = ln
	return nil
}

func (s *Supervisor) serveMetrics() {
	if s.metricsLn == nil {
		return
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(&collector{s: s, created: time.Now()})
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	mux.HandleFunc("/restarts", s.serveRestarts)
	s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.metrics.Serve(s.metricsLn)
}
