package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/tlscert"
)

// Kernel TLS rows (bench peers -only ktls): nginx with and without
// ssl_conf_command Options KTLS, the same certificate, workers and
// server CPUs, under loadgen on the client CPUs. Go's crypto/tls has no
// kTLS, so the target is not in these rows. The kernel's tls_stat
// counters say whether the records really went through the kernel: a
// kTLS row whose TlsTxSw did not move, or a plain row whose did, fails
// the run.

// ktlsBody is the keep-alive rows' response body: large enough that
// encrypting it, not the request, is the work (sendfile is what kTLS
// makes zero-copy).
const ktlsBody = 256 << 10

// ktlsCells are the rows: keep-alive fetching the large file, and a full
// handshake per request on the small answer.
var ktlsCells = []struct{ conn, path, body string }{
	{"keepalive", "/files/body.bin", "256KiB"}, {"close", "/", "3B"},
}

// checkKernelTLS refuses the kTLS rows on a kernel that cannot do TLS,
// before anything is started or written.
func checkKernelTLS() error {
	if _, err := kernel.KernelTLS(); err != nil {
		if errors.Is(err, kernel.ErrNoKernelTLS) {
			return fmt.Errorf("-only ktls: %v: kernel TLS cannot be measured on this kernel", err)
		}
		return fmt.Errorf("-only ktls: %v", err)
	}
	return nil
}

// cmdPeersKTLS runs the kTLS rows alone.
func cmdPeersKTLS(ctx context.Context, f *peerFlags, stdout, stderr io.Writer) error {
	if err := checkKernelTLS(); err != nil {
		return err
	}
	split, m, err := peerBudget(stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	dir, err := os.MkdirTemp("", "lbbench-ktls-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cert, key, err := tlscert.Write(dir, tlscert.Options{})
	if err != nil {
		return err
	}
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(files, "body.bin"), make([]byte, ktlsBody), 0o644); err != nil {
		return err
	}
	var servers []peerServer
	for _, on := range []bool{false, true} {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return err
		}
		ng, err := peers.StartNginx(peers.NginxOptions{Addr: addr, Workers: f.workers, ReusePort: true, CPUs: split.Servers,
			CertFile: cert, KeyFile: key, KTLS: on, Files: files})
		if err != nil {
			return err
		}
		defer ng.Stop()
		name := "nginx"
		if on {
			name = "nginx-ktls"
		}
		servers = append(servers, peerServer{name, addr, ng.Pid()})
	}
	res, err := openResultsFile(f.dir, "disjoint ("+split.String()+")")
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "results in %s; %s, %d client thread(s)\n", f.dir, split, split.Threads())
	p := peerRun{f: f, budget: split, m: m, res: res, config: fileConfig(), stderr: stderr}
	p.progress = &progress{w: stderr, n: f.rounds * len(ktlsCells) * len(servers), start: time.Now()}
	for round := range f.rounds {
		order := slices.Clone(servers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range ktlsCells {
			for _, s := range order {
				if err := p.ktlsRow(ctx, s, c.conn, c.path, c.body, round); err != nil {
					return err
				}
			}
		}
	}
	if err := summarizePeers(f.dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ktls rows only: %s/REPORT.md, %s/benchstat.txt\n", f.dir, f.dir)
	return nil
}

// ktlsRow: loadgen (a full handshake per connection) against one nginx;
// the server tree's CPU per request and the kernel's TLS counters.
func (p *peerRun) ktlsRow(ctx context.Context, s peerServer, conn, path, body string, round int) error {
	k0, err := kernel.KernelTLS()
	if err != nil {
		return err
	}
	before, err := p.m.Tree(s.root)
	if err != nil {
		return err
	}
	run, err := p.loadgenOn(ctx, p.budget.Clients, nil, "https://"+s.addr+path, conn, 0, "-insecure")
	if err != nil {
		return err
	}
	after, err := p.m.Tree(s.root)
	if err != nil {
		return err
	}
	k1, err := kernel.KernelTLS()
	if err != nil {
		return err
	}
	d := run.doc
	if d.Requests == 0 || d.Errors > d.Requests/100 {
		return fmt.Errorf("loadgen against %s (kTLS rows): %d requests, %d errors", s.name, d.Requests, d.Errors)
	}
	// TlsTxSw counts sockets the kernel began to encrypt for, one per
	// connection nginx handed over.
	kconns := int64(k1["TlsTxSw"] - k0["TlsTxSw"])
	switch {
	case s.name == "nginx-ktls" && kconns < d.Connections/2:
		return fmt.Errorf("%s: the kernel encrypted for %d of %d connections (tls_stat TlsTxSw): OpenSSL did not hand them to the kernel", s.name, kconns, d.Connections)
	case s.name == "nginx" && kconns > 0:
		return fmt.Errorf("%s: tls_stat TlsTxSw moved by %d without kTLS: another process uses kernel TLS, the rows would not be apart", s.name, kconns)
	}
	cpu, calls := perReq(after.Sub(before), d.Requests)
	p.progress.step("round %d kTLS conn=%s body=%s: %s: %.0f req/s, %.1fµs server CPU per request, kernel TLS on %d connections",
		round+1, conn, body, s.name, d.RequestsPerSec, cpu*1e6, kconns)
	return p.add(fmt.Sprintf("PeerKTLS/side=server/impl=%s/conn=%s/body=%s", s.name, conn, body), d.Requests,
		benchfmt.Value{Value: d.RequestsPerSec, Unit: "req/s"}, benchfmt.Value{Value: cpu, Unit: "cpu-sec/req"},
		benchfmt.Value{Value: max(calls, 1e-9), Unit: "syscalls/req"},
		benchfmt.Value{Value: float64(kconns) / float64(max(d.Connections, 1)), Unit: "ktls-conn-fraction"})
}

// peerKTLSSection reports the kTLS rows.
var peerKTLSSection = results.Section{
	Name: "PeerKTLS", Title: "nginx with and without kernel TLS", Cols: "/impl", Rows: "/conn,/body",
	About: "nginx (reuseport, ssl) with ssl_conf_command Options KTLS (nginx-ktls) and without, the same certificate, workers and server CPUs, " +
		"under loadgen on the client CPUs: keep-alive fetching a 256 KiB file (sendfile), and a full handshake per request on a 3-byte answer. " +
		"ktls-conn-fraction: the connections the kernel encrypted for (tls_stat TlsTxSw) per connection loadgen made.",
	Metrics: []results.Metric{
		{Unit: "req/s", Label: "throughput (req/s)", Summary: true}, {Unit: "cpu-sec/req", Label: "server CPU per request", Summary: true},
		{Unit: "syscalls/req", Label: "server system calls per request"}, {Unit: "ktls-conn-fraction", Label: "connections encrypted by the kernel", Keep: true},
	},
}
