// Command target is an HTTP/1.1 server whose worker processes get their
// connections through one of the accept models lbbench compares.
//
//	target -model reuseport -workers 2 -addr 127.0.0.1:8080
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/models"
	"github.com/lbbench/lbbench/internal/steer"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("target: ")
	if models.IsWorker() {
		os.Exit(models.RunWorker())
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run parses args and runs the target; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if code, stop := cli.Stop("target", err, stderr); stop {
		return code
	}
	if err := models.Run(context.Background(), cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "target: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (models.Config, error) {
	cfg := models.DefaultConfig()
	fs := flag.NewFlagSet("target", flag.ContinueOnError)
	models.Models.Var(fs, &cfg.Model, "model", "accept model: "+models.Models.Words())
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes (default: one per CPU)")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address HOST:PORT")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "Prometheus /metrics address HOST:PORT, or off")
	models.Dispatches.Var(fs, &cfg.Dispatch, "dispatch", "single model: rr (round-robin) or least (fewest open connections)")
	models.AcceptStrategies.Var(fs, &cfg.Accept, "accept", "shared and reuseport models: netpoll, blocking or exclusive (EPOLLEXCLUSIVE)")
	fs.IntVar(&cfg.Backlog, "backlog", cfg.Backlog, "listen backlog (0: net.core.somaxconn)")
	fs.BoolVar(&cfg.MPTCP, "mptcp", cfg.MPTCP, "listen with MPTCP instead of plain TCP")
	fs.IntVar(&cfg.GOMAXPROCS, "gomaxprocs", cfg.GOMAXPROCS, "GOMAXPROCS of each worker")
	fs.BoolVar(&cfg.Pin, "pin", cfg.Pin, "pin worker i to CPU i (round-robin over the allowed CPUs)")
	fs.DurationVar(&cfg.Work, "work", cfg.Work, "CPU busy time per request")
	fs.DurationVar(&cfg.Sleep, "sleep", cfg.Sleep, "idle time per request")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "on SIGTERM/SIGINT, how long in-flight requests may take")
	models.RestartStrategies.Var(fs, &cfg.Restart, "restart", "rolling-restart strategy: reuseport-overlap, reuseport-migrate, fd-handoff (reuseport), shared-inherit (shared), dispatch (single); default: the model's own")
	fs.DurationVar(&cfg.RestartEvery, "restart-every", 0, "replace one worker (in turn) this often; SIGHUP replaces them all once")
	steer.Modes.Var(fs, &cfg.Steer, "steer", "reuseport: hash (kernel), cpu (cBPF: receiving CPU), incoming-cpu (SO_INCOMING_CPU), bpf-rr or bpf-least (eBPF); udp: bpf-flow (by the flow id in each datagram)")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "close a connection whose request head is not complete this long after accept (or after its first byte), with 408")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close a keep-alive connection idle this long")
	fs.BoolVar(&cfg.Locality, "locality", cfg.Locality, "check every connection's arrival CPU against the worker's (X-Conn-Local; two system calls per connection; on with -steer cpu|incoming-cpu)")
	models.HTTPPaths.Var(fs, &cfg.HTTP, "http", "serving path: lean (raw system calls, an event loop per worker, like nginx) or nethttp (Go's net/http server, as most Go services run)")
	fs.BoolVar(&cfg.InProc, "inproc", cfg.InProc, "run the workers as goroutines of one process (GOMAXPROCS = workers), each with its own accept loop (shared or reuseport); they share a pid: count them with loadgen -fair-by worker")
	models.Protos.Var(fs, &cfg.Proto, "proto", "tcp (HTTP/1.1) or udp (request/response datagrams: shared or reuseport, -accept netpoll|blocking)")
	fs.IntVar(&cfg.RcvBuf, "rcvbuf", 0, "SO_RCVBUF of each socket, bytes (0: the kernel's default)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "terminate TLS in every worker with this PEM certificate (with -tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "the PEM private key of -tls-cert")
	fs.IntVar(&cfg.ReadyFD, "ready-fd", 0, "write one JSON line (supervisor and worker pids, addresses) to this inherited descriptor once every worker serves, then close it")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := cli.Set(fs)
	if set["restart"] && cfg.InProc {
		return cfg, fmt.Errorf("-inproc: in-process workers cannot be restarted one at a time (-restart)")
	}
	if set["dispatch"] && cfg.Model != models.Single {
		return cfg, fmt.Errorf("-dispatch applies to the single model only")
	}
	if set["accept"] && cfg.Model == models.Single {
		return cfg, fmt.Errorf("-accept applies to the shared and reuseport models; single uses -dispatch")
	}
	if cfg.Proto == models.ProtoUDP {
		// These shape TCP connections and HTTP requests; a datagram
		// server would ignore them, so asking for one is a mistake.
		for _, name := range []string{"work", "mptcp", "header-timeout", "idle-timeout"} {
			if set[name] {
				return cfg, fmt.Errorf("-%s is TCP's: -proto udp answers each datagram at once", name)
			}
		}
		if set["accept"] && cfg.Accept != models.AcceptNetpoll && cfg.Accept != models.AcceptBlocking {
			return cfg, fmt.Errorf("-proto udp: -accept %s has nothing to choose between for datagrams: use netpoll or blocking", cfg.Accept)
		}
	}
	return cfg, cfg.Validate()
}
