package peers

import (
	"bufio"
	"embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The servers whose primary forks the workers and, for some, accepts
// for them: Node.js cluster, gunicorn, uvicorn. Their apps are in apps/.

//go:embed apps/node-cluster.js apps/lbbench_app.py apps/lbbench_gunicorn.py
var apps embed.FS

// Forked-server kinds.
const (
	NodeRR            = "node-rr"            // cluster, NODE_CLUSTER_SCHED_POLICY=rr: the primary accepts, hands out round-robin
	NodeNone          = "node-none"          // cluster, NODE_CLUSTER_SCHED_POLICY=none: the workers accept on the shared socket
	Gunicorn          = "gunicorn"           // sync workers on the master's one socket
	GunicornReusePort = "gunicorn-reuseport" // the same with --reuse-port (set on the master's one socket before the fork)
	Uvicorn           = "uvicorn"            // --workers N on the master's one socket
)

// ForkedKinds lists the kinds StartForked knows.
var ForkedKinds = []string{NodeRR, NodeNone, Gunicorn, GunicornReusePort, Uvicorn}

// ForkedOptions configure StartForked.
type ForkedOptions struct {
	Kind    string
	Addr    string // HOST:PORT
	Workers int
	Work    time.Duration // CPU burnt per request
	CPUs    []int         // pin the server here (nil: no pinning)
	NetNS   string
	// Log makes every worker log its pid per request: the server's own
	// access log where it has one (gunicorn's, with %(p)s), else the
	// app's (Node, uvicorn). LogCounts reads it.
	Log bool
}

// Forked is a running primary and its workers.
type Forked struct {
	Kind    string
	Addr    string
	d       *daemon
	workers []int
	log     string
}

// debianPython is the interpreter Debian's gunicorn and uvicorn packages
// install into (a pyenv or venv python3 first in PATH has neither).
const debianPython = "/usr/bin/python3"

// StartForked starts the server and waits until every worker says it
// serves (its pid on stdout).
func StartForked(o ForkedOptions) (*Forked, error) {
	if !slices.Contains(ForkedKinds, o.Kind) {
		return nil, fmt.Errorf("unknown server %q (want one of %s)", o.Kind, strings.Join(ForkedKinds, ", "))
	}
	if o.Workers < 1 {
		return nil, fmt.Errorf("%s: %d workers", o.Kind, o.Workers)
	}
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, err
	}
	name := map[string]string{NodeRR: "node", NodeNone: "node", Gunicorn: "gunicorn", GunicornReusePort: "gunicorn", Uvicorn: "uvicorn"}[o.Kind]
	bin := name
	if o.Kind == Uvicorn {
		if err := exec.Command(debianPython, "-c", "import uvicorn").Run(); err != nil {
			return nil, errors.New("uvicorn not found for " + debianPython + ": run make setup (it installs Debian's python3-uvicorn)")
		}
		bin, name = debianPython, "python3"
	}
	d, err := newDaemon(name)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"node-cluster.js", "lbbench_app.py", "lbbench_gunicorn.py"} {
		b, _ := apps.ReadFile("apps/" + f)
		if err := os.WriteFile(filepath.Join(d.dir, f), b, 0o644); err != nil {
			os.RemoveAll(d.dir)
			return nil, err
		}
	}
	f := &Forked{Kind: o.Kind, Addr: o.Addr, d: d}
	if o.Log {
		f.log = filepath.Join(d.dir, "served.log")
	}
	env, args := forkedCommand(o, d.dir, host, port, f.log)
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	err = d.start(launch{netns: o.NetNS, cpus: o.CPUs, addr: o.Addr, stdout: w, argv: append([]string{bin}, args...), env: env, dir: d.dir})
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	if err := f.waitWorkers(r, o.Workers); err != nil {
		return nil, err
	}
	slices.Sort(f.workers)
	return f, nil
}

// forkedCommand is the environment and the arguments that start kind
// o.Kind from its apps in dir, logging to log ("": no log).
func forkedCommand(o ForkedOptions, dir, host, port, log string) (env, args []string) {
	env = []string{"LBBENCH_ADDR=" + o.Addr, "LBBENCH_WORKERS=" + strconv.Itoa(o.Workers),
		"LBBENCH_WORK_US=" + strconv.FormatFloat(float64(o.Work)/float64(time.Microsecond), 'f', -1, 64), "PYTHONPATH=" + dir}
	switch o.Kind {
	case NodeRR, NodeNone:
		env = append(env, "NODE_CLUSTER_SCHED_POLICY="+strings.TrimPrefix(o.Kind, "node-"))
		args = []string{filepath.Join(dir, "node-cluster.js")}
	case Gunicorn, GunicornReusePort:
		args = []string{"-c", filepath.Join(dir, "lbbench_gunicorn.py"), "-w", strconv.Itoa(o.Workers), "-b", o.Addr,
			"--chdir", dir, "--graceful-timeout", "2", "--backlog", "4096"}
		if o.Kind == GunicornReusePort {
			args = append(args, "--reuse-port")
		}
		if log != "" {
			args = append(args, "--access-logfile", log, "--access-logformat", "%(p)s")
		}
		args = append(args, "lbbench_app:wsgi")
	case Uvicorn:
		args = []string{"-m", "uvicorn", "--workers", strconv.Itoa(o.Workers), "--host", strings.Trim(host, "[]"), "--port", port,
			"--app-dir", dir, "--no-access-log", "--lifespan", "on", "--backlog", "4096", "lbbench_app:asgi"}
	}
	if log != "" && o.Kind != Gunicorn && o.Kind != GunicornReusePort {
		env = append(env, "LBBENCH_LOG="+log)
	}
	return env, args
}

// waitWorkers reads the pids the workers print on r until n of them
// serve, else stops the server; the pids of workers restarted later are
// read and dropped.
func (f *Forked) waitWorkers(r *os.File, n int) error {
	pids := make(chan int)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil && pid > 0 {
				pids <- pid
			}
		}
		close(pids)
		r.Close()
	}()
	timeout := time.After(10 * time.Second)
	for len(f.workers) < n {
		select {
		case pid, ok := <-pids:
			if !ok {
				f.Stop()
				return fmt.Errorf("%s: %d of %d workers started: %s", f.Kind, len(f.workers), n, strings.TrimSpace(f.d.stderr.String()))
			}
			f.workers = append(f.workers, pid)
		case <-timeout:
			f.Stop()
			return fmt.Errorf("%s: %d of %d workers serving after 10s: %s", f.Kind, len(f.workers), n, strings.TrimSpace(f.d.stderr.String()))
		}
	}
	go func() {
		for range pids { // a worker restarted after a crash; stdout must not block
		}
	}()
	return nil
}

// Stop stops the primary and waits for its workers (gunicorn: SIGINT,
// its quick shutdown; the others: SIGTERM).
func (f *Forked) Stop() error {
	sig := syscall.SIGTERM
	if f.Kind == Gunicorn || f.Kind == GunicornReusePort {
		sig = syscall.SIGINT
	}
	return f.d.stop(sig)
}

// Pid is the primary's pid.
func (f *Forked) Pid() int { return f.d.pid() }

// Workers are the workers' pids, in order.
func (f *Forked) Workers() []int { return f.workers }

// LogCounts reads the pid log (Log): requests per worker pid.
func (f *Forked) LogCounts() (map[string]int, error) {
	if f.log == "" {
		return nil, errors.New(f.Kind + ": started without its log")
	}
	b, err := os.ReadFile(f.log)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// gunicorn's %(p)s is "<pid>".
		if l = strings.Trim(strings.TrimSpace(l), "<>"); l != "" {
			out[l]++
		}
	}
	return out, nil
}
