package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/tlscert"
)

// The tls scenario: every accepted connection costs a handshake in the
// worker that got it, the real-world form of the CPU-heavy handler.

// tlsServerModels are the real servers the tls scenario runs beside the
// target's models, each configured by the suite to terminate TLS.
var tlsServerModels = []string{"nginx-shared", "haproxy"}

// Handshake modes of the tls scenario's cells.
const (
	handshakeFull    = "full"    // a new connection and a full handshake per request (loadgen's default)
	handshakeResumed = "resumed" // a new connection per request, resuming the last session (-tls-resume)
)

// canTLS says whether the suite can make a model terminate TLS: every
// TCP variant of the target, and the real servers that say so.
func canTLS(model string) bool {
	if sm, ok := serverModels[model]; ok {
		return sm.tls
	}
	v, ok := targetVariants[model]
	return ok && !v.UDP
}

// tlsModels are the -models, then the real servers the scenario always
// compares with.
func tlsModels(p Params) []string {
	var out []string
	for _, m := range append(slices.Clone(p.Models), tlsServerModels...) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// checkTLSModels refuses, when the tls scenario is to run, a -models
// entry the suite cannot make terminate TLS.
func checkTLSModels(f *matrixFlags) error {
	if !slices.ContainsFunc(f.scenarios, func(s Scenario) bool { return s.Name == tlsScenario.Name }) {
		return nil
	}
	for _, m := range f.Models {
		if !canTLS(m) {
			var can []string
			for _, n := range modelNames() {
				if canTLS(n) {
					can = append(can, n)
				}
			}
			return usageErr("model %s: the suite cannot make it terminate TLS (the tls scenario; want %s)", m, strings.Join(can, ", "))
		}
	}
	return nil
}

var tlsScenario = Scenario{
	Name: "tls",
	About: "the models, nginx and HAProxy terminating TLS 1.3 (a throwaway certificate per sample), N workers: " +
		"a full handshake per request, a resumed one per request, and keep-alive",
	Cells: func(p Params) []Cell {
		var out []Cell
		for _, mode := range []struct{ handshake, conn string }{
			{handshakeFull, "close"}, {handshakeResumed, "close"}, {handshakeFull, "keepalive"},
		} {
			for _, m := range tlsModels(p) {
				c := cell("TLS", m, p.CPUs, mode.conn, p.Duration)
				c.Name = fmt.Sprintf("TLS/model=%s/handshake=%s/workers=%d/conn=%s", m, mode.handshake, p.CPUs, mode.conn)
				c.TLS = true
				if mode.handshake == handshakeResumed {
					c.TLSResume = true
				}
				out = append(out, c)
			}
		}
		return out
	},
	Sections: []results.Section{{
		Name: "TLS", Title: "TLS termination",
		About: "Every worker terminates TLS (the target's models, nginx 1.22 on one socket with EPOLLEXCLUSIVE, HAProxy 2.6 with a thread per worker), " +
			"ECDSA P-256, TLS 1.3, loadgen verifying the certificate; N workers, attributed by the kernel to the thread that sent each response. " +
			"handshake=full/conn=close: a new connection and a full handshake per request, as ab does; handshake=resumed: a new connection per request " +
			"resuming the last session by ticket, as wrk does (TLS 1.3 still does a key exchange); conn=keepalive: one full handshake per connection. " +
			"A handshake costs far more than the request and happens in the worker that accepted, so this is where a busy worker that keeps accepting shows.",
		Rows:    "/handshake,/conn,/workers@num",
		Metrics: []results.Metric{throughput, p99, withFilter(connImbalance, "/conn:close"), withFilter(reqImbalance, "/conn:keepalive")},
		Charts:  shareCharts,
	}},
}

// The tls scenario is kept in this file; it joins the table after the
// scenarios of scenarios.go.
func init() { scenarios = append(scenarios, tlsScenario) }

// tlsFiles are a sample's throwaway certificate and key.
type tlsFiles struct{ cert, key, dir string }

// newTLSFiles writes a certificate for addr's host (127.0.0.1, or the
// netns path's service address) in a folder of its own.
func newTLSFiles(addr string) (tlsFiles, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return tlsFiles{}, err
	}
	dir, err := os.MkdirTemp("", "lbbench-tls-")
	if err != nil {
		return tlsFiles{}, err
	}
	cert, key, err := tlscert.Write(dir, tlscert.Options{Hosts: []string{host}})
	if err != nil {
		os.RemoveAll(dir)
		return tlsFiles{}, err
	}
	return tlsFiles{cert: cert, key: key, dir: dir}, nil
}

func (t tlsFiles) remove() {
	if t.dir != "" {
		os.RemoveAll(t.dir)
	}
}
