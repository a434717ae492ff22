package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/nativehist"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/steer"
)

// startTimeout bounds how long a worker may take to say it is ready.
const startTimeout = 5 * time.Second

// Supervisor runs the workers of one target.
type Supervisor struct {
	cfg    Config
	log    *log.Logger
	stderr io.Writer

	region   *shm.Region
	counters *os.File
	lfd      int          // supervisor's listening socket (single, shared); -1 otherwise
	ln       net.Listener // single: the accept loop's listener
	metrics  *http.Server
	spawnCh  chan spawnReq
	cpus     []int // CPUs workers are pinned to, round-robin
	bpf      *steer.Objects
	loads    []byte // bpf-least: the mmap-ed loads map

	metricsLn net.Listener
	watchers  sync.WaitGroup

	mu      sync.Mutex
	procs   []*proc // by worker id
	retired []retiredWorker
	// retiredHist holds the request durations of exited workers, so the
	// histogram never goes backwards.
	retiredHist nativehist.Counts
	restarts    []uint64
	handed      []uint64 // single: connections sent to each worker process
	order       []int    // single: dispatch order scratch
	stopping    bool
	ready       chan struct{} // closed once all workers are up

	dispatchNext int
}

// proc is one running worker process.
type proc struct {
	id      int
	pid     int
	cmd     *exec.Cmd
	ctl     int // supervisor's end of the control socket
	inode   uint64
	started time.Time
	exited  chan struct{}
}

// retiredWorker keeps the final counts of a worker process that exited,
// so its counters do not vanish from /metrics.
type retiredWorker struct {
	id                 int
	pid                int
	accepted, requests uint64
	cpuSeconds         float64
}

// maxRetired bounds the retired series kept per worker.
const maxRetired = 4

type spawnReq struct {
	cmd   *exec.Cmd
	cpu   int // -1: no pinning
	reply chan error
}

// Run starts a target and serves until ctx is done or SIGTERM/SIGINT
// arrives, then drains and returns nil. Start-up problems come back as one
// error naming the problem; nothing is left running.
func Run(ctx context.Context, cfg Config, stderr io.Writer) error {
	s, err := Start(cfg, stderr)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case <-ctx.Done():
	case sig := <-sigs:
		s.log.Printf("%v: stopping (grace %v)", sig, cfg.Grace)
	}
	return s.Stop()
}

// Start starts the supervisor and its workers and returns once every
// worker is ready.
func Start(cfg Config, stderr io.Writer) (_ *Supervisor, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:      cfg,
		log:      log.New(stderr, "target: ", 0),
		stderr:   stderr,
		lfd:      -1,
		procs:    make([]*proc, cfg.Workers),
		restarts: make([]uint64, cfg.Workers),
		handed:   make([]uint64, cfg.Workers),
		spawnCh:  make(chan spawnReq),
		ready:    make(chan struct{}),
	}
	defer func() {
		if err != nil {
			s.abort()
		}
	}()
	if err := s.preflight(); err != nil {
		return s, err
	}
	if steer.Pinned(cfg.Steer) {
		s.cfg.Pin = true
	}
	if s.cfg.Pin {
		if s.cpus, err = allowedCPUs(); err != nil {
			return s, err
		}
	}
	if err := s.loadSteering(); err != nil {
		return s, err
	}
	if s.region, s.counters, err = shm.Create(cfg.Workers); err != nil {
		return s, err
	}
	if err := s.listenMetrics(); err != nil {
		return s, err
	}
	if err := s.listen(); err != nil {
		return s, err
	}
	go s.spawner()

	for id := range cfg.Workers {
		p, err := s.spawn(id)
		if err != nil {
			return s, err
		}
		s.procs[id] = p
	}
	for _, p := range s.procs {
		s.watchers.Add(1)
		go s.watch(p)
	}
	if cfg.Model == Single {
		go s.acceptLoop()
	}
	s.serveMetrics()
	close(s.ready)
	s.log.Printf("model=%s accept=%s workers=%d pids=%s listening on %s, metrics on %s",
		cfg.Model, s.acceptName(), cfg.Workers, s.pidList(), cfg.Addr, s.metricsURL())
	return s, nil
}

func (s *Supervisor) acceptName() string {
	if s.cfg.Model == Single {
		return "supervisor"
	}
	return s.cfg.Accept
}

func (s *Supervisor) dispatchName() string {
	if s.cfg.Model == Single {
		return s.cfg.Dispatch
	}
	return "none"
}

func (s *Supervisor) metricsURL() string {
	if s.metrics == nil {
		return "(off)"
	}
	return "http://" + s.cfg.MetricsAddr + "/metrics"
}

// preflight refuses to start where a listener already holds the address:
// with SO_REUSEPORT the kernel would let our workers join a stale group
// and share its traffic without a word.
func (s *Supervisor) preflight() error {
	ap, err := sockets.ParseAddr(s.cfg.Addr)
	if err != nil {
		return err
	}
	if ap.Port() == 0 {
		return fmt.Errorf("-addr %s: give a fixed port (workers must share it)", s.cfg.Addr)
	}
	ls, err := sockets.Conflicts(ap)
	if err != nil {
		return fmt.Errorf("listen %s: cannot list sockets: %w", s.cfg.Addr, err)
	}
	if len(ls) > 0 {
		return fmt.Errorf("listen %s: address already in use (%d listening socket(s) on port %d, e.g. a stale target)", s.cfg.Addr, len(ls), ap.Port())
	}
	return nil
}

// listen opens the supervisor's socket for the single and shared models.
// It is made blocking and wrapped without the netpoller, so passing it to
// workers (exec calls Fd()) changes nothing and the supervisor's own epoll
// is not woken by every connection; workers set O_NONBLOCK as their accept
// strategy needs.
func (s *Supervisor) listen() error {
	switch s.cfg.Model {
	case Shared:
		fd, err := sockets.Listen(s.cfg.Addr, sockets.ListenOptions{Backlog: s.cfg.Backlog, MPTCP: s.cfg.MPTCP, Blocking: true})
		if err != nil {
			return err
		}
		s.lfd = fd
	case Single:
		fd, err := sockets.Listen(s.cfg.Addr, sockets.ListenOptions{Backlog: s.cfg.Backlog, MPTCP: s.cfg.MPTCP})
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "listener")
		s.ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
		}
		s.lfd = int(mustRawFD(s.ln))
	}
	return nil
}

// spawner starts every worker from one locked OS thread: Pdeathsig fires
// when the thread that forked the child exits, so that thread must live as
// long as the supervisor. Pinning sets this thread's affinity for the
// fork, which the child inherits.
func (s *Supervisor) spawner() {
	runtime.LockOSThread()
	var all unix.CPUSet
	unix.SchedGetaffinity(0, &all)
	for r := range s.spawnCh {
		if r.cpu >= 0 {
			var one unix.CPUSet
			one.Set(r.cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				r.reply <- fmt.Errorf("pin to CPU %d: %w", r.cpu, err)
				continue
			}
		}
		err := r.cmd.Start()
		if r.cpu >= 0 {
			unix.SchedSetaffinity(0, &all)
		}
		r.reply <- err
	}
}

// spawn starts worker id and waits until it is ready.
func (s *Supervisor) spawn(id int) (*proc, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	child := os.NewFile(uintptr(pair[1]), "control")
	defer child.Close()

	spec, _ := json.Marshal(workerSpec{Config: s.cfg, ID: id})
	exe, err := os.Executable()
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), "GOMAXPROCS="+strconv.Itoa(s.cfg.GOMAXPROCS))
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.ExtraFiles = []*os.File{s.counters, child}
	if s.cfg.Model == Shared {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(s.lfd), "listener"))
	}
	if s.bpf != nil {
		files, err := s.bpf.Files()
		if err != nil {
			unix.Close(pair[0])
			return nil, err
		}
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		cmd.ExtraFiles = append(append(cmd.ExtraFiles, nil), files...) // fd 5 unused
	}
	if s.loads != nil {
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&s.loads[8*id])), 0)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.region.Slot(id).Reset()

	cpu := -1
	if len(s.cpus) > 0 {
		cpu = s.cpus[id%len(s.cpus)]
	}
	reply := make(chan error, 1)
	s.spawnCh <- spawnReq{cmd: cmd, cpu: cpu, reply: reply}
	if err := <-reply; err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("start worker %d: %w", id, err)
	}
	p := &proc{id: id, pid: cmd.Process.Pid, cmd: cmd, ctl: pair[0], started: time.Now(), exited: make(chan struct{})}
	msg, err := readControl(p.ctl, startTimeout)
	if err == nil {
		if rest, ok := strings.CutPrefix(msg, "ready "); ok {
			p.inode, _ = strconv.ParseUint(rest, 10, 64)
			return p, nil
		}
		err = errors.New(strings.TrimPrefix(msg, "error "))
	}
	cmd.Process.Kill()
	cmd.Wait()
	unix.Close(p.ctl)
	return nil, err
}

// readControl reads one message from a control socket within timeout.
func readControl(fd int, timeout time.Duration) (string, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", fmt.Errorf("worker not ready after %v", timeout)
		}
		break
	}
	buf := make([]byte, 4096)
	n, _, _, _, err := unix.Recvmsg(fd, buf, nil, 0)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", errors.New("worker exited during start-up")
	}
	return string(buf[:n]), nil
}

// watch waits for a worker process to exit and, unless the target is
// stopping, starts a new one in its place (with a new pid).
func (s *Supervisor) watch(p *proc) {
	defer s.watchers.Done()
	for {
		err := p.cmd.Wait()
		cpu := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
		close(p.exited)
		s.mu.Lock()
		slot := s.region.Slot(p.id)
		s.retired = append(s.retired, retiredWorker{
			id: p.id, pid: p.pid, cpuSeconds: cpu.Seconds(),
			accepted: slot.Load(shm.Accepted), requests: slot.Load(shm.Requests),
		})
		slot.AddHistogramTo(&s.retiredHist)
		s.trimRetired(p.id)
		stopping := s.stopping
		if !stopping {
			s.restarts[p.id]++
		}
		unix.Close(p.ctl)
		p.ctl = -1
		s.mu.Unlock()
		if stopping {
			return
		}
		status := "exited"
		if err != nil {
			status = err.Error()
		}
		s.log.Printf("worker %d (pid %d) %s; restarting", p.id, p.pid, status)
		var np *proc
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			if np, err = s.spawn(p.id); err == nil {
				break
			}
			s.log.Printf("restart worker %d: %v", p.id, err)
			time.Sleep(backoff)
			if s.isStopping() {
				return
			}
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			np.cmd.Process.Signal(syscall.SIGTERM)
			p = np
			continue
		}
		s.procs[p.id] = np
		s.handed[p.id] = 0
		s.mu.Unlock()
		s.log.Printf("worker %d restarted as pid %d", p.id, np.pid)
		p = np
	}
}

func (s *Supervisor) trimRetired(id int) {
	n := 0
	for i := len(s.retired) - 1; i >= 0; i-- {
		if s.retired[i].id != id {
			continue
		}
		if n++; n > maxRetired {
			s.retired = append(s.retired[:i], s.retired[i+1:]...)
		}
	}
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// Workers returns the current worker processes' pids by worker id.
func (s *Supervisor) Workers() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids := make([]int, len(s.procs))
	for i, p := range s.procs {
		if p != nil {
			pids[i] = p.pid
		}
	}
	return pids
}

func (s *Supervisor) pidList() string {
	var b strings.Builder
	for i, pid := range s.Workers() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(pid))
	}
	return b.String()
}

// Stop stops accepting, lets workers drain within the grace period, and
// returns when every worker process has exited.
func (s *Supervisor) Stop() error {
	s.mu.Lock()
	s.stopping = true
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
	}
	for _, p := range procs {
		if p != nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	done := make(chan struct{})
	go func() { s.watchers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.Grace + 2*time.Second):
		s.mu.Lock()
		for _, p := range s.procs {
			s.log.Printf("worker %d (pid %d) still running after grace; killing", p.id, p.pid)
			p.cmd.Process.Kill()
		}
		s.mu.Unlock()
		<-done
	}
	if s.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.metrics.Shutdown(ctx)
		cancel()
	}
	if s.lfd >= 0 && s.ln == nil {
		unix.Close(s.lfd)
	}
	if s.bpf != nil {
		s.bpf.Close()
	}
	close(s.spawnCh)
	s.log.Printf("stopped")
	return nil
}

// abort undoes a failed Start.
func (s *Supervisor) abort() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for _, p := range s.procs {
		if p != nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	}
	if s.ln != nil {
		s.ln.Close()
	} else if s.lfd >= 0 {
		unix.Close(s.lfd)
	}
	if s.metricsLn != nil {
		s.metricsLn.Close()
	}
	if s.bpf != nil {
		s.bpf.Close()
	}
}

// loadSteering checks what a -steer mode needs and loads its eBPF objects.
func (s *Supervisor) loadSteering() error {
	mode := s.cfg.Steer
	if steer.Pinned(mode) {
		if len(s.cpus) != s.cfg.Workers || s.cpus[len(s.cpus)-1] != len(s.cpus)-1 {
			return fmt.Errorf("-steer %s needs one worker per CPU, on CPUs 0 to N-1: use -workers %d (allowed CPUs %v)", mode, len(s.cpus), s.cpus)
		}
	}
	if !steer.UsesEBPF(mode) {
		return nil
	}
	objs, err := steer.Load(mode, s.cfg.Workers)
	if err != nil {
		return fmt.Errorf("-steer %s: %w", mode, err)
	}
	s.bpf = objs
	if objs.Loads != nil {
		s.loads, err = unix.Mmap(objs.Loads.FD(), 0, pageRound(8*s.cfg.Workers), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("-steer %s: mmap loads map: %w", mode, err)
		}
	}
	return nil
}

// allowedCPUs lists the CPUs this process may run on.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus, nil
}

func mustRawFD(ln net.Listener) uintptr {
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return ^uintptr(0)
	}
	var fd uintptr
	rc.Control(func(f uintptr) { fd = f })
	return fd
}

// metricsListenError says which address could not be bound, in one line.
func metricsListenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen metrics %s: address already in use", addr)
	}
	return fmt.Errorf("listen metrics %s: %v", addr, errors.Unwrap(err))
}
