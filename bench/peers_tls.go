package main

import (
	"context"
	"fmt"
	"os"

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
}

func startTLSPeer(budget peers.Budget, workers int) (*tlsPeer, error) {
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
		AccessLog: true, CPUs: budget.Servers, CertFile: cert, KeyFile: key})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &tlsPeer{ng: ng, addr: addr, dir: dir}, nil
}

func (t *tlsPeer) stop() {
	t.ng.Stop()
	os.RemoveAll(t.dir)
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
