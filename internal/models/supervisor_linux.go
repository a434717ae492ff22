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
	"slices"
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
	lfds     []int        // reuseport with fd-handoff: one socket per worker id, held here
	ln       net.Listener // single: the accept loop's listener
	metrics  *http.Server
	spawnCh  chan spawnReq
	cpus     []int // CPUs workers are pinned to, round-robin
	bpf      *steer.Objects
	// migrateWas is net.ipv4.tcp_migrate_req before reuseport-migrate
	// set it ("" when untouched).
	migrateWas string
	loads      []byte // bpf-least: the mmap-ed loads map

	metricsLn net.Listener
	watchers  sync.WaitGroup

	restartMu sync.Mutex // one rolling restart step at a time

	mu       sync.Mutex
	procs    []*proc // current process of each worker id
	draining []*proc // replaced processes still finishing their requests
	slotFree []int   // free shm slots (2 per worker id: an old and a new process overlap)
	rolling  []uint64
	history  []RestartEvent
	retired  []retiredWorker
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
	id       int
	slot     int // shm slot
	replaced bool
	pid      int
	cmd      *exec.Cmd
	ctl      int // supervisor's end of the control socket
	inode    uint64
	started  time.Time
	exited   chan struct{}
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
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return s.Stop()
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				s.log.Printf("SIGHUP: rolling restart (%s)", s.cfg.Restart)
				go s.RollingRestart()
				continue
			}
			s.log.Printf("%v: stopping (grace %v)", sig, cfg.Grace)
			return s.Stop()
		}
	}
}

// Start starts the supervisor and its workers and returns once every
// worker is ready.
func Start(cfg Config, stderr io.Writer) (_ *Supervisor, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Validate filled in defaults (the restart strategy) on cfg.
	s := &Supervisor{
		cfg:      cfg,
		log:      log.New(stderr, "target: ", 0),
		stderr:   stderr,
		lfd:      -1,
		procs:    make([]*proc, cfg.Workers),
		restarts: make([]uint64, cfg.Workers),
		rolling:  make([]uint64, cfg.Workers),
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
	if s.region, s.counters, err = shm.Create(2 * cfg.Workers); err != nil {
		return s, err
	}
	for i := range 2 * cfg.Workers {
		s.slotFree = append(s.slotFree, i)
	}
	if err := s.prepareRestarts(); err != nil {
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
	if cfg.RestartEvery > 0 {
		go s.restartEvery(cfg.RestartEvery)
	}
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
	case ReusePort:
		if s.cfg.Restart != RestartHandoff {
			return nil
		}
		// The supervisor holds every worker's socket, so a successor
		// inherits it with its accept queue intact.
		for range s.cfg.Workers {
			fd, err := sockets.Listen(s.cfg.Addr, sockets.ListenOptions{ReusePort: true, Backlog: s.cfg.Backlog, MPTCP: s.cfg.MPTCP, Blocking: true})
			if err != nil {
				return err
			}
			s.lfds = append(s.lfds, fd)
		}
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

	s.mu.Lock()
	if len(s.slotFree) == 0 {
		s.mu.Unlock()
		unix.Close(pair[0])
		return nil, fmt.Errorf("start worker %d: no free counter slot", id)
	}
	slot := s.slotFree[0]
	s.slotFree = s.slotFree[1:]
	s.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			s.freeSlot(slot)
		}
	}()
	s.region.Slot(slot).Reset()

	spec, _ := json.Marshal(workerSpec{Config: s.cfg, ID: id, Slot: slot, Slots: s.region.Slots()})
	exe, err := os.Executable()
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), "GOMAXPROCS="+strconv.Itoa(s.cfg.GOMAXPROCS))
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.ExtraFiles = []*os.File{s.counters, child}
	switch {
	case s.cfg.Model == Shared:
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(s.lfd), "listener"))
	case len(s.lfds) > 0:
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(s.lfds[id]), "listener"))
	case s.bpf != nil:
		cmd.ExtraFiles = append(cmd.ExtraFiles, nil) // fd 5 unused
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
		cmd.ExtraFiles = append(cmd.ExtraFiles, files...)
	}
	if s.loads != nil {
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&s.loads[8*id])), 0)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

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
	p := &proc{id: id, slot: slot, pid: cmd.Process.Pid, cmd: cmd, ctl: pair[0], started: time.Now(), exited: make(chan struct{})}
	msg, err := readControl(p.ctl, startTimeout)
	if err == nil {
		if rest, found := strings.CutPrefix(msg, "ready "); found {
			p.inode, _ = strconv.ParseUint(rest, 10, 64)
			ok = true
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

// watch waits for a worker process to exit. A process that was replaced
// by a rolling restart, or exits while the target stops, is done; any
// other exit is a crash, and a new process takes the worker's place.
func (s *Supervisor) watch(p *proc) {
	defer s.watchers.Done()
	err := p.cmd.Wait()
	cpu := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	close(p.exited)
	s.mu.Lock()
	slot := s.region.Slot(p.slot)
	s.retired = append(s.retired, retiredWorker{
		id: p.id, pid: p.pid, cpuSeconds: cpu.Seconds(),
		accepted: slot.Load(shm.Accepted), requests: slot.Load(shm.Requests),
	})
	slot.AddHistogramTo(&s.retiredHist)
	s.trimRetired(p.id)
	s.draining = slices.DeleteFunc(s.draining, func(d *proc) bool { return d == p })
	s.slotFree = append(s.slotFree, p.slot)
	crashed := !s.stopping && !p.replaced
	if crashed {
		s.restarts[p.id]++
	}
	unix.Close(p.ctl)
	p.ctl = -1
	s.mu.Unlock()
	if !crashed {
		return
	}
	status := "exited"
	if err != nil {
		status = err.Error()
	}
	s.log.Printf("worker %d (pid %d) %s; restarting", p.id, p.pid, status)
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		s.restartMu.Lock()
		np, err := s.spawn(p.id)
		if err == nil {
			s.mu.Lock()
			if s.stopping {
				s.mu.Unlock()
				s.restartMu.Unlock()
				np.cmd.Process.Kill()
				np.cmd.Wait()
				unix.Close(np.ctl)
				return
			}
			s.procs[p.id] = np
			s.handed[p.id] = 0
			s.watchers.Add(1)
			s.mu.Unlock()
			s.restartMu.Unlock()
			go s.watch(np)
			s.log.Printf("worker %d restarted as pid %d", p.id, np.pid)
			return
		}
		s.restartMu.Unlock()
		s.log.Printf("restart worker %d: %v", p.id, err)
		time.Sleep(backoff)
		if s.isStopping() {
			return
		}
	}
}

func (s *Supervisor) freeSlot(slot int) {
	s.mu.Lock()
	s.slotFree = append(s.slotFree, slot)
	s.mu.Unlock()
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
	s.restartMu.Lock() // no rolling restart step half done
	s.mu.Lock()
	s.stopping = true
	procs := append(append([]*proc(nil), s.procs...), s.draining...)
	s.mu.Unlock()
	s.restartMu.Unlock()
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
		for _, p := range append(append([]*proc(nil), s.procs...), s.draining...) {
			if p.ctl >= 0 {
				s.log.Printf("worker %d (pid %d) still running after grace; killing", p.id, p.pid)
				p.cmd.Process.Kill()
			}
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
	for _, fd := range s.lfds {
		unix.Close(fd)
	}
	if s.bpf != nil {
		s.bpf.Close()
	}
	s.restoreRestarts()
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
	for _, fd := range s.lfds {
		unix.Close(fd)
	}
	s.restoreRestarts()
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
