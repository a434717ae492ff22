package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
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
		"HTTP responses written by each worker process, by status class (code: 2xx, 4xx, ...).", append(workerLabels, "code"), nil)
	descOpen = prometheus.NewDesc("lbbench_target_open_connections",
		"Connections each worker process holds open now.", workerLabels, nil)
	descClosed = prometheus.NewDesc("lbbench_target_closed_connections_total",
		"Connections each worker process closed, by reason: client (closed first), server (Connection: close), idle (keep-alive timeout), "+
			"header_timeout, bad_request, drain (stop or restart), error (reset).", append(workerLabels, "reason"), nil)
	descAcceptErrors = prometheus.NewDesc("lbbench_target_accept_errors_total",
		"Failed accept calls, by reason: fd_limit (EMFILE/ENFILE: the connection stays queued and is retried), no_memory, aborted (client gave up first), "+
			"handoff_lost (single: a worker could not receive a handed-over connection). worker=\"supervisor\" is the single model's accept loop.",
		append(workerLabels, "reason"), nil)
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
		"Accepted connections by whether their packets arrive on the CPU the worker accepted them on (SO_INCOMING_CPU vs getcpu; only with -locality).",
		[]string{"model", "worker", "pid", "locality"}, nil)
	descRolling = prometheus.NewDesc("lbbench_target_rolling_restarts_total",
		"Rolling-restart steps (a worker replaced by a new process on SIGHUP or -restart-every).", []string{"model", "worker", "strategy"}, nil)
	descLastRestart = prometheus.NewDesc("lbbench_target_last_rolling_restart_timestamp_seconds",
		"When the last rolling-restart step told the old process to stop (0: none yet). All instants: /restarts.", []string{"model"}, nil)
	descForeign = prometheus.NewDesc("lbbench_target_foreign_listeners",
		"Listening sockets on the target's address and port not owned by its processes (same-user SO_REUSEPORT strays take a share of the connections), checked 4 times a second.",
		[]string{"model"}, nil)
	// TLS (-tls-cert, -tls-key).
	descHandshakes = prometheus.NewDesc("lbbench_target_tls_handshakes_total",
		"TLS handshakes each worker process ran, by result: full, resumed (a session ticket), or failed: not_tls (a plain-HTTP client: answered 400 in the clear), "+
			"timeout (not complete within the header timeout), eof (the client closed or reset), bad_certificate (the client refused the certificate), "+
			"alert (another alert from the client), drain (cut by a stop or restart), other.", append(workerLabels, "result"), nil)
	descHandshakeDuration = prometheus.NewDesc("lbbench_target_tls_handshake_duration_seconds",
		"Time a successful TLS handshake took, from the worker starting it (at accept, or at hand-over in the single model) to its end, all workers.", []string{"model"}, nil)

	descInfo = prometheus.NewDesc("lbbench_target_info",
		"The target's configuration; always 1.", []string{"model", "accept", "dispatch", "steer", "workers", "http", "proto"}, nil)

	// UDP (-proto udp).
	descDgrams = prometheus.NewDesc("lbbench_target_datagrams_total",
		"Datagrams each worker process handled: direction in (valid requests read), out (replies sent), malformed (too short or not ours: dropped), "+
			"send_failed (replies the kernel would not take), bad_source (requests from port 0, which no reply can reach: unanswered).", append(workerLabels, "proto", "direction"), nil)
	descSocketDrops = prometheus.NewDesc("lbbench_target_socket_drops_total",
		"Datagrams the kernel dropped at each of the target's UDP sockets (a full receive buffer; sock_diag SK_MEMINFO_DROPS).", []string{"model", "socket", "proto"}, nil)
	descSocketQueue = prometheus.NewDesc("lbbench_target_socket_receive_queue_bytes",
		"Bytes waiting in each UDP socket's receive queue.", []string{"model", "socket", "proto"}, nil)
	descHostUDP = prometheus.NewDesc("lbbench_target_host_udp_errors_total",
		"Host-wide UDP error counters from /proc/net/snmp: RcvbufErrors, SndbufErrors, InErrors.", []string{"counter"}, nil)
)

// dgramWords label the Dgram* words.
var dgramWords = []struct {
	word  int
	label string
}{{shm.DgramIn, "in"}, {shm.DgramOut, "out"}, {shm.DgramMalformed, "malformed"}, {shm.DgramSendFailed, "send_failed"}, {shm.DgramBadSource, "bad_source"}}

// statusClasses label the Status* words.
var statusClasses = []struct {
	word  int
	label string
}{{shm.Status1xx, "1xx"}, {shm.Status2xx, "2xx"}, {shm.Status3xx, "3xx"}, {shm.Status4xx, "4xx"}, {shm.Status5xx, "5xx"}}

// closeReasons label the Close* words.
var closeReasons = []struct {
	word  int
	label string
}{{shm.CloseClient, "client"}, {shm.CloseServer, "server"}, {shm.CloseIdle, "idle"}, {shm.CloseHeader, "header_timeout"},
	{shm.CloseBadRequest, "bad_request"}, {shm.CloseDrain, "drain"}, {shm.CloseError, "error"}}

// handshakeResults label the TLS* words.
var handshakeResults = []struct {
	word  int
	label string
}{{shm.TLSFull, "full"}, {shm.TLSResumed, "resumed"}, {shm.TLSNotTLS, "not_tls"}, {shm.TLSTimeout, "timeout"}, {shm.TLSEOF, "eof"},
	{shm.TLSBadCert, "bad_certificate"}, {shm.TLSAlert, "alert"}, {shm.TLSDrain, "drain"}, {shm.TLSOther, "other"}}

// acceptReasons label the Accept* words.
var acceptReasons = []struct {
	word  int
	label string
}{{shm.AcceptFDLimit, "fd_limit"}, {shm.AcceptNoMemory, "no_memory"}, {shm.AcceptAborted, "aborted"}, {shm.HandoffLost, "handoff_lost"}}

// collector reads the workers' shared-memory counters, /proc and sock_diag
// at scrape time, so the hot path never touches Prometheus.
type collector struct {
	s       *Supervisor
	created time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descRequests, descOpen, descClosed, descAcceptErrors, descCPU, descRestarts,
		descDuration, descQueue, descBacklog, descOverflows, descDrops, descLocality, descRolling, descLastRestart, descInfo, descForeign,
		descDgrams, descSocketDrops, descSocketQueue, descHostUDP, descHandshakes, descHandshakeDuration} {
		ch <- d
	}
}

// counts sends the counters of one worker process (live or retired);
// the handshake counters only when TLS is on.
func counts(ch chan<- prometheus.Metric, model, w, pid string, v *[shm.Counters]uint64, udp, tlsOn bool) {
	if udp {
		for _, d := range dgramWords {
			ch <- prometheus.MustNewConstMetric(descDgrams, prometheus.CounterValue, float64(v[d.word]), model, w, pid, ProtoUDP, d.label)
		}
		return
	}
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(v[shm.Accepted]), model, w, pid)
	for _, sc := range statusClasses {
		if n := v[sc.word]; n > 0 || sc.word == shm.Status2xx {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), model, w, pid, sc.label)
		}
	}
	for _, r := range closeReasons {
		ch <- prometheus.MustNewConstMetric(descClosed, prometheus.CounterValue, float64(v[r.word]), model, w, pid, r.label)
	}
	for _, r := range acceptReasons {
		ch <- prometheus.MustNewConstMetric(descAcceptErrors, prometheus.CounterValue, float64(v[r.word]), model, w, pid, r.label)
	}
	if tlsOn {
		for _, r := range handshakeResults {
			ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(v[r.word]), model, w, pid, r.label)
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	model := s.cfg.Model
	udp, tlsOn := s.cfg.Proto == ProtoUDP, s.cfg.tlsOn()
	var hist, tlsHist nativehist.Counts
	s.mu.Lock()
	for _, r := range s.retired {
		w, pid := strconv.Itoa(r.id), strconv.Itoa(r.pid)
		counts(ch, model, w, pid, &r.counts, udp, tlsOn)
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, r.cpuSeconds, model, w, pid)
	}
	hist.Add(&s.retiredHist)
	tlsHist.Add(&s.retiredTLSHist)
	live := s.live()
	for _, p := range live {
		w, pid := strconv.Itoa(p.id), strconv.Itoa(p.pid)
		slot := s.region.Slot(p.slot)
		v := slot.Snapshot()
		counts(ch, model, w, pid, &v, udp, tlsOn)
		ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(v[shm.Open]), model, w, pid)
		ch <- prometheus.MustNewConstMetric(descLocality, prometheus.CounterValue, float64(v[shm.LocalConns]), model, w, pid, "local")
		ch <- prometheus.MustNewConstMetric(descLocality, prometheus.CounterValue, float64(v[shm.RemoteConns]), model, w, pid, "remote")
		if cpu, err := kernel.ProcCPUSeconds(p.pid); err == nil {
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, cpu, model, w, pid)
		}
		slot.AddHistogramTo(&hist)
		slot.AddHistTo(shm.HandshakeDuration, &tlsHist)
	}
	if sv := s.ownSlot(); sv.Load(shm.AcceptFDLimit)+sv.Load(shm.AcceptNoMemory)+sv.Load(shm.AcceptAborted) > 0 {
		pid := strconv.FormatUint(sv.Load(shm.PID), 10)
		for _, r := range acceptReasons[:3] {
			ch <- prometheus.MustNewConstMetric(descAcceptErrors, prometheus.CounterValue, float64(sv.Load(r.word)), model, "supervisor", pid, r.label)
		}
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
	mine := s.model.listeners(live)
	s.mu.Unlock()

	if udp {
		c.collectUDP(ch, mine)
	} else {
		ch <- metrics.NewCountsHistogram(descDuration, &hist, c.created, model)
		if tlsOn {
			ch <- metrics.NewCountsHistogram(descHandshakeDuration, &tlsHist, c.created, model)
		}
		c.collectQueues(ch, mine)
	}
	if ext, err := kernel.TcpExt(); err == nil {
		ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(ext["ListenOverflows"]))
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(ext["ListenDrops"]))
	}
	if s.foreign != nil {
		ch <- prometheus.MustNewConstMetric(descForeign, prometheus.GaugeValue, float64(s.foreign.count.Load()), model)
	}
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
		model, s.model.acceptName(), s.model.dispatchName(), s.cfg.Steer, strconv.Itoa(s.cfg.Workers), s.cfg.HTTP, s.cfg.Proto)
}

// collectUDP sends each UDP socket's drops and queue, and the host's UDP
// error counters.
func (c *collector) collectUDP(ch chan<- prometheus.Metric, mine map[uint64]string) {
	ap, _ := sockets.ParseAddr(c.s.cfg.Addr)
	if ls, err := sockets.UDPSockets(ap.Port()); err == nil {
		for _, l := range ls {
			if label, ok := mine[l.Inode]; ok {
				ch <- prometheus.MustNewConstMetric(descSocketDrops, prometheus.CounterValue, float64(l.Drops), c.s.cfg.Model, label, ProtoUDP)
				ch <- prometheus.MustNewConstMetric(descSocketQueue, prometheus.GaugeValue, float64(l.Queue), c.s.cfg.Model, label, ProtoUDP)
			}
		}
	}
	if u, err := kernel.UDP(); err == nil {
		for _, k := range []string{"RcvbufErrors", "SndbufErrors", "InErrors"} {
			ch <- prometheus.MustNewConstMetric(descHostUDP, prometheus.CounterValue, float64(u[k]), k)
		}
	}
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

// WorkerInfo is one live worker process, as /workers lists it.
type WorkerInfo struct {
	ID  int `json:"id"`
	PID int `json:"pid"`
	// Accepted counts TCP connections; a UDP worker accepts none, so it
	// shows the request datagrams it read (Datagrams) instead.
	Accepted  *uint64   `json:"accepted,omitempty"`
	Datagrams *uint64   `json:"datagrams,omitempty"`
	Started   time.Time `json:"started"`
	Draining  bool      `json:"draining,omitempty"` // replaced, finishing its requests
}

// serveWorkers answers /workers: the supervisor's pid and its live
// worker processes, as JSON.
func (s *Supervisor) serveWorkers(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	var ws []WorkerInfo
	for _, p := range s.live() {
		wi := WorkerInfo{ID: p.id, PID: p.pid, Started: p.started, Draining: p.replaced}
		if s.cfg.Proto == ProtoUDP {
			n := s.region.Slot(p.slot).Load(shm.DgramIn)
			wi.Datagrams = &n
		} else {
			n := s.region.Slot(p.slot).Load(shm.Accepted)
			wi.Accepted = &n
		}
		ws = append(ws, wi)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		PID     int          `json:"pid"`
		Workers []WorkerInfo `json:"workers"`
	}{os.Getpid(), ws})
}

// metricsServer is the supervisor's HTTP endpoint: /metrics, /restarts
// and /workers.
type metricsServer struct {
	s    *Supervisor
	addr string
	ln   net.Listener
	srv  *http.Server
}

// listenMetrics binds the metrics address before any worker starts, so a
// taken port fails start-up cleanly. -metrics-addr off gives a server
// that serves nothing.
func listenMetrics(s *Supervisor) (*metricsServer, error) {
	m := &metricsServer{s: s, addr: s.cfg.MetricsAddr}
	if !m.on() {
		return m, nil
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen metrics %s: address already in use", m.addr)
		}
		return nil, fmt.Errorf("listen metrics %s: %v", m.addr, errors.Unwrap(err))
	}
	m.ln = ln
	return m, nil
}

func (m *metricsServer) on() bool { return m.addr != "" && m.addr != "off" }

func (m *metricsServer) url() string {
	if !m.on() {
		return "(off)"
	}
	return "http://" + m.addr + "/metrics"
}

func (m *metricsServer) serve() {
	if m.ln == nil {
		return
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(&collector{s: m.s, created: time.Now()})
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	mux.HandleFunc("/restarts", m.s.serveRestarts)
	mux.HandleFunc("/workers", m.s.serveWorkers)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go m.srv.Serve(m.ln)
}

func (m *metricsServer) close() {
	switch {
	case m.srv != nil:
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m.srv.Shutdown(ctx)
		cancel()
	case m.ln != nil:
		m.ln.Close()
	}
}
