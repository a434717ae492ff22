package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/budget"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/tlscert"
)

// tlsPeer is the nginx the TLS rows run against: the plain peer's
// worker count and CPUs, terminating TLS with a certificate made for
// this run, its access log naming each request's $ssl_session_reused,
// the ground truth of which handshakes a client really did.
type tlsPeer struct {
	ng   *peers.Nginx
	addr string
	dir  string
	// The target terminating TLS with the same certificate, workers and
	// CPUs: the server rows.
	tg     *peers.Target
	tgAddr string
}

func startTLSPeer(split budget.Budget, workers int, bin string) (*tlsPeer, error) {
	dir, err := os.MkdirTemp("", "lbbench-peers-tls-")
	if err != nil {
		return nil, err
	}
	cert, key, err := tlscert.Write(dir, tlscert.Options{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: addr, Workers: workers, ReusePort: true,
		AccessLog: true, CPUs: split.Servers, CertFile: cert, KeyFile: key})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t := &tlsPeer{ng: ng, addr: addr, dir: dir}
	if t.tgAddr, err = freeLoopbackAddr(); err != nil {
		t.stop()
		return nil, err
	}
	tbin, targs := budget.Pin(split.Servers, filepath.Join(bin, "target"), "-model", "reuseport", "-workers", strconv.Itoa(workers),
		"-addr", t.tgAddr, "-metrics-addr", "off", "-tls-cert", cert, "-tls-key", key)
	if t.tg, err = peers.StartTarget(tbin, targs...); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

func (t *tlsPeer) stop() {
	if t.tg != nil {
		t.tg.Stop()
	}
	t.ng.Stop()
	os.RemoveAll(t.dir)
}

// tlsServers runs loadgen (a new connection per request, on the client
// CPUs) against the target and nginx terminating TLS, full and resumed
// handshakes: the server tree's CPU per request, which is mostly the
// handshake's.
func (p *peerRun) tlsServers(ctx context.Context, t *tlsPeer, round int) error {
	servers := []peerServer{{"target", t.tgAddr, t.tg.Cmd.Process.Pid}, {"nginx", t.addr, t.ng.Pid()}}
	if round%2 == 1 {
		slices.Reverse(servers)
	}
	for _, handshake := range []string{"full", "resumed"} {
		for _, s := range servers {
			extra := []string{"-insecure"}
			if handshake == "resumed" {
				extra = append(extra, "-tls-resume")
			}
			run, used, err := metered(p.m, s.root, func() (*loadgenRun, error) {
				return p.loadgenOn(ctx, p.budget.Clients, nil, "https://"+s.addr+"/", "close", 0, extra...)
			})
			if err != nil {
				return err
			}
			d := run.doc
			if d.TLS == nil || d.Errors > d.Requests/100 {
				return fmt.Errorf("loadgen against %s (TLS): %d requests, %d errors", s.name, d.Requests, d.Errors)
			}
			if resumed := float64(d.TLS.Resumed) / float64(max(d.TLS.Full+d.TLS.Resumed, 1)); handshake == "full" && resumed > 0.01 || handshake == "resumed" && resumed < 0.9 {
				return fmt.Errorf("loadgen against %s (TLS): %.0f%% of handshakes resumed, not what a %s-handshake row measures", s.name, 100*resumed, handshake)
			}
			cpu, calls := perReq(used, d.Requests)
			p.progress.step("round %d TLS %s handshakes: %s under loadgen: %.0f req/s, %.1fµs server CPU per request", round+1, handshake, s.name, d.RequestsPerSec, cpu*1e6)
			if err := p.add(fmt.Sprintf("PeerTLS/side=server/load=max/impl=%s/conn=close/handshake=%s", s.name, handshake), d.Requests,
				benchfmt.Value{Value: d.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: cpu, Unit: "cpu-sec/req"},
				benchfmt.Value{Value: max(calls, 1e-9), Unit: "syscalls/req"}); err != nil {
				return err
			}
		}
	}
	return nil
}

// tlsClientCells pair each client with the peer that makes the same
// handshakes: wrk resumes its TLS sessions when it reconnects, as
// loadgen -tls-resume does; ab makes a full handshake on every
// connection, as loadgen does by default. ab has one thread, so that
// pair runs on one client CPU each, with GOMAXPROCS=1.
var tlsClientCells = []struct{ tool, handshake string }{
	{"loadgen", "resumed"}, {"wrk", "resumed"}, {"loadgen", "full"}, {"ab", "full"},
}

// tlsClients runs every TLS client cell once, in alternating order.
func (p *peerRun) tlsClients(ctx context.Context, t *tlsPeer, round int) error {
	order := tlsClientCells
	if round%2 == 1 {
		order = []struct{ tool, handshake string }{order[1], order[0], order[3], order[2]}
	}
	for _, c := range order {
		if err := p.tlsClient(ctx, t, c.tool, c.handshake, round); err != nil {
			return err
		}
	}
	return nil
}

// tlsClient: one client against the TLS nginx, a new connection per
// request; the client's usage per request, and nginx's log as the check
// that the client made the handshakes its row says.
func (p *peerRun) tlsClient(ctx context.Context, t *tlsPeer, tool, handshake string, round int) error {
	url := "https://" + t.addr + "/"
	cpus := p.budget.Clients
	if handshake == "full" {
		cpus = cpus[:1]
	}
	r0, f0, err := t.ng.SessionReuse()
	if err != nil {
		return err
	}
	extra := []string{"-insecure"}
	if handshake == "resumed" {
		extra = append(extra, "-tls-resume")
	}
	c, err := p.runClient(ctx, tool, url, "close", cpus, extra...)
	if err != nil {
		return err
	}
	r1, f1, err := t.ng.SessionReuse()
	if err != nil {
		return err
	}
	resumed, full := r1-r0, f1-f0
	share := float64(resumed) / float64(max(resumed+full, 1))
	if handshake == "full" && share > 0.01 || handshake == "resumed" && share < 0.9 {
		return fmt.Errorf("%s against nginx (TLS): nginx's log has %d of %d requests on resumed sessions, not what a %s-handshake row measures",
			tool, resumed, resumed+full, handshake)
	}
	p.progress.step("round %d TLS %s handshakes: %s against nginx: %.0f req/s, %.1fµs client CPU per request (nginx: %d of %d resumed)",
		round+1, handshake, tool, c.rate, c.cpuReq*1e6, resumed, resumed+full)
	return p.add(fmt.Sprintf("PeerTLS/side=client/load=max/impl=%s/conn=close/handshake=%s", tool, handshake), c.n, c.values()...)
}
