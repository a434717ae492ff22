package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbbench/lbbench/internal/nativehist"
)

// Loadgen is the load generator's live metrics.
type Loadgen struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	connections *prometheus.CounterVec
	errors      *prometheus.CounterVec
	latency     prometheus.Histogram
}

// NewLoadgen registers the loadgen metrics. url and conn describe the run
// in lbbench_loadgen_info; errorKinds are pre-initialised at zero.
func NewLoadgen(url, conn string, rate float64, errorKinds []string) *Loadgen {
	l := &Loadgen{reg: NewRegistry()}
	l.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lbbench_loadgen_requests_total", Help: "Successful responses, by the worker pid that sent them (none: no usable pid).",
	}, []string{"pid"})
	l.connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lbbench_loadgen_connections_total", Help: "Connections that carried a response, by the worker pid that served them.",
	}, []string{"pid"})
	l.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lbbench_loadgen_errors_total", Help: "Failed requests and connection attempts, by kind.",
	}, []string{"kind"})
	l.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:                        "lbbench_loadgen_request_duration_seconds",
		Help:                        "Request latency as the client saw it (from the intended send time in the open loop).",
		Buckets:                     nativehist.ClassicBounds,
		NativeHistogramBucketFactor: 1.1,
	})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lbbench_loadgen_info", Help: "The running load; always 1.",
		ConstLabels: prometheus.Labels{"url": url, "conn": conn, "rate": strconv.FormatFloat(rate, 'g', -1, 64)},
	})
	info.Set(1)
	for _, k := range errorKinds {
		l.errors.WithLabelValues(k)
	}
	l.reg.MustRegister(l.requests, l.connections, l.errors, l.latency, info)
	return l
}

// TLS adds the handshake counter of an https:// run,
// lbbench_loadgen_tls_handshakes_total{result} (full, resumed, or the
// failure's reason; each of results present from the start), and
// returns what counts one handshake.
func (l *Loadgen) TLS(results []string) func(result string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lbbench_loadgen_tls_handshakes_total", Help: "Measured TLS handshakes: full, resumed, or failed by reason.",
	}, []string{"result"})
	for _, r := range results {
		c.WithLabelValues(r)
	}
	l.reg.MustRegister(c)
	return func(r string) { c.WithLabelValues(r).Inc() }
}

// Observe records one latency in seconds.
func (l *Loadgen) Observe(sec float64) { l.latency.Observe(sec) }

// AddSecond adds one second's counts.
func (l *Loadgen) AddSecond(requests, conns map[uint64]int64, errs map[string]int64) {
	for pid, n := range requests {
		l.requests.WithLabelValues(pidLabel(pid)).Add(float64(n))
	}
	for pid, n := range conns {
		l.connections.WithLabelValues(pidLabel(pid)).Add(float64(n))
	}
	for k, n := range errs {
		l.errors.WithLabelValues(k).Add(float64(n))
	}
}

// pidLabel is a pid's label value; 0 (no usable pid) is "none".
func pidLabel(pid uint64) string {
	if pid == 0 {
		return "none"
	}
	return strconv.FormatUint(pid, 10)
}

// Handler serves the metrics at /metrics.
func (l *Loadgen) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(l.reg))
	return mux
}

// Registry is the registry behind the handler (for tests).
func (l *Loadgen) Registry() *prometheus.Registry { return l.reg }
