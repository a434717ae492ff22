package main

import (
	"path/filepath"
	"slices"
	"time"

	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/peers"
)

// Real servers, each a model of the matrix: started and configured by the
// suite on loopback, attributed by the kernel (they send no worker
// header the suite can trust, and HAProxy's workers are threads).

// serverModel is a real server the suite can run as a model.
type serverModel struct {
	start func(o serverOptions) (server, error)
	// fairBy is what the server's workers are: processes or threads.
	fairBy string
	// tls says the suite can make it terminate TLS (the tls scenario).
	tls bool
}

// serverOptions are what a cell asks of a server.
type serverOptions struct {
	bin     string // the folder with bin/gohttp
	addr    string
	workers int
	work    time.Duration // CPU burnt per request
	cpus    []int         // pin the server here (nil: no pinning)
	netns   string        // run in this network namespace ("": here)
	// certFile and keyFile, if set, make it terminate TLS (only servers
	// whose serverModel says tls).
	certFile, keyFile string
	conns             int // connections it must hold at once (0: its default)
}

// server is a running server of a cell, the target's or a real one.
type server interface {
	peers.Server
	// stallPID is the process to pause to stall one worker, 0 when one
	// worker cannot be paused alone (threads, goroutines).
	stallPID() int
}

var serverModels = map[string]serverModel{
	"nginx-mutex":     {start: nginx(false, true), fairBy: load.FairProcess, tls: true},
	"nginx-shared":    {start: nginx(false, false), fairBy: load.FairProcess, tls: true},
	"nginx-reuseport": {start: nginx(true, false), fairBy: load.FairProcess, tls: true},
	"haproxy":         {start: haproxy(false), fairBy: load.FairThread, tls: true},
	"haproxy-shards":  {start: haproxy(true), fairBy: load.FairThread, tls: true},
	"gohttp":          {start: startGoHTTP, fairBy: load.FairProcess},
	// The primary forks the workers: Node's rr accepts in the primary
	// and hands each connection over; the others share one socket.
	peers.NodeRR:            {start: forked(peers.NodeRR), fairBy: load.FairProcess},
	peers.NodeNone:          {start: forked(peers.NodeNone), fairBy: load.FairProcess},
	peers.Gunicorn:          {start: forked(peers.Gunicorn), fairBy: load.FairProcess},
	peers.GunicornReusePort: {start: forked(peers.GunicornReusePort), fairBy: load.FairProcess},
	peers.Uvicorn:           {start: forked(peers.Uvicorn), fairBy: load.FairProcess},
}

// forked is a server whose primary forks its workers (Node.js cluster,
// gunicorn, uvicorn).
func forked(kind string) func(serverOptions) (server, error) {
	return func(o serverOptions) (server, error) {
		f, err := peers.StartForked(peers.ForkedOptions{Kind: kind, Addr: o.addr, Workers: o.workers, Work: o.work, CPUs: o.cpus, NetNS: o.netns})
		if err != nil {
			return nil, err
		}
		return forkedServer{f}, nil
	}
}

type forkedServer struct{ *peers.Forked }

func (f forkedServer) stallPID() int { return f.Workers()[0] }

// nginx 1.22: workers share one socket, woken one at a time by
// EPOLLEXCLUSIVE (accept_mutex off, the default) or taking turns with
// the accept mutex; or each has its own (listen ... reuseport).
func nginx(reuseport, mutex bool) func(serverOptions) (server, error) {
	return func(o serverOptions) (server, error) {
		n, err := peers.StartNginx(peers.NginxOptions{Addr: o.addr, Workers: o.workers, ReusePort: reuseport,
			AcceptMutex: mutex, Work: o.work, CPUs: o.cpus, NetNS: o.netns, CertFile: o.certFile, KeyFile: o.keyFile, Connections: o.conns})
		if err != nil {
			return nil, err
		}
		return nginxServer{n}, nil
	}
}

type nginxServer struct{ *peers.Nginx }

func (n nginxServer) stallPID() int {
	if w := n.Workers(); len(w) > 0 {
		return w[0]
	}
	return 0
}

// haproxy 2.6, one process with a thread per worker: one shared socket
// (with its multi-queue accept, the default), or one per thread (shards
// by-thread).
func haproxy(shards bool) func(serverOptions) (server, error) {
	return func(o serverOptions) (server, error) {
		h, err := peers.StartHAProxy(peers.HAProxyOptions{Addr: o.addr, Threads: o.workers, Shards: shards, Work: o.work, CPUs: o.cpus, NetNS: o.netns,
			CertFile: o.certFile, KeyFile: o.keyFile, MaxConn: o.conns})
		if err != nil {
			return nil, err
		}
		return haproxyServer{h}, nil
	}
}

type haproxyServer struct{ *peers.HAProxy }

func (haproxyServer) stallPID() int { return 0 } // SIGSTOP stops every thread

// threadCounter is a server whose workers are threads of one process
// and which says how many client connections each thread runs.
type threadCounter interface {
	connectionThreads() (map[int]int, error)
}

// connectionThreads are HAProxy's client connections per thread, from
// its own "show fd".
func (h haproxyServer) connectionThreads() (map[int]int, error) {
	st, err := h.Stats()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.ConnectionThreads()
}

func startGoHTTP(o serverOptions) (server, error) {
	g, err := peers.StartGoHTTP(peers.GoHTTPOptions{Bin: filepath.Join(o.bin, "gohttp"), Addr: o.addr, Procs: o.workers, Work: o.work, CPUs: o.cpus, NetNS: o.netns})
	if err != nil {
		return nil, err
	}
	return goServer{g}, nil
}

type goServer struct{ *peers.GoHTTP }

func (g goServer) stallPID() int { return g.Workers()[0] }

// targetServer is bin/target as a cell's server.
type targetServer struct {
	*peers.Target
	inproc bool
}

func (t targetServer) stallPID() int {
	if t.inproc {
		return 0
	}
	return t.Ready.Workers[0].PID
}

// isServer says whether a model is a real server.
func isServer(model string) bool { _, ok := serverModels[model]; return ok }

// inProc says whether a target model runs its workers in one process.
func inProc(model string) bool { return targetVariants[model].InProc }

// canStall says whether one worker of the model can be paused alone.
func canStall(model string) bool {
	return !inProc(model) && (!isServer(model) || serverModels[model].fairBy == load.FairProcess)
}

// fairBy is what loadgen counts as the model's workers.
func fairBy(model string) string {
	switch {
	case isServer(model):
		return serverModels[model].fairBy
	case inProc(model):
		return load.FairWorker
	}
	return load.FairProcess
}

// attributionArgs are loadgen's attribution flags for a model: the
// kernel's (for every model of a cell group with a real server, so that
// all pay its cost), else the target's header.
func attributionArgs(model string, kernel bool) []string {
	args := []string{"-fair-by", fairBy(model)}
	switch {
	case kernel && fairBy(model) == load.FairWorker:
		return append(args, "-attribute", "both") // goroutines: their ids come from the header
	case kernel:
		return append(args, "-attribute", "kernel")
	}
	return args
}

// withKernelAttribution attributes every cell of a scenario by the
// kernel when one of them is a real server: the BPF program costs every
// system call a little, and the cells compared must pay alike.
func withKernelAttribution(cells []Cell) []Cell {
	if !slices.ContainsFunc(cells, func(c Cell) bool { return isServer(c.Model) }) {
		return cells
	}
	for i := range cells {
		cells[i].Kernel = true
	}
	return cells
}
