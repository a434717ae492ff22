package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/nativehist"
	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
)

// startTimeout bounds how long a worker may take to say it is ready.
const startTimeout = 5 * time.Second

// exitGraceOver is a worker's exit status when its grace period ran out
// with connections still open (it closed them).
const exitGraceOver = 3

// Supervisor runs the workers of one target: the process table, spawn,
// watch and restart, and the one teardown every way out goes through.
// What differs between accept models is its model.
type Supervisor struct {
	cfg    Config
	log    *log.Logger
	stderr io.Writer
	model  model

	region   *shm.Region
	counters *os.File
	cpus     []int // CPUs workers are pinned to, round-robin
	spawnCh  chan spawnReq
	metrics  *metricsServer
	foreign  *foreignWatch

	// closers release what Start acquired, in reverse order, once.
	closers  []func()
	teardown sync.Once

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
	// retiredTLSHist: their TLS handshake durations.
	retiredTLSHist nativehist.Counts
	restarts       []uint64
	stopping       bool
	// graceOver names the worker processes whose grace ran out.
	graceOver []string
}

// proc is one running worker process.
type proc struct {
	id       int
	slot     int // shm slot
	replaced bool
	pid      int
	cmd      *exec.Cmd // nil for an in-process worker (-inproc)
	done     chan int  // -inproc: the worker's exit status
	ctl      int       // supervisor's end of the control socket; -1 once exited
	inode    uint64    // the worker's listening socket (reuseport)
	handed   uint64    // single: connections sent to this process
	started  time.Time
}

// retiredWorker keeps the final counts of a worker process that exited,
// so its counters do not vanish from /metrics.
type retiredWorker struct {
	id, pid    int
	counts     [shm.Counters]uint64
	cpuSeconds float64
}

// maxRetired bounds the retired series kept per worker.
const maxRetired = 4

type spawnReq struct {
	cmd   *exec.Cmd
	cpu   int // -1: no pinning
	reply chan error
}

// controlMsg is what a worker tells the supervisor when it has started:
// the inode of its listening socket, or why it could not start.
type controlMsg struct {
	Inode uint64 `json:"inode,omitempty"`
	Error string `json:"error,omitempty"`
}

// Ready is what the target writes to -ready-fd once every worker serves.
type Ready struct {
	PID         int           `json:"pid"` // the supervisor
	Addr        string        `json:"addr"`
	MetricsAddr string        `json:"metrics_addr,omitempty"`
	Model       string        `json:"model"`
	Workers     []ReadyWorker `json:"workers"`
}

// ReadyWorker is one worker process at start-up.
type ReadyWorker struct {
	ID  int `json:"id"`
	PID int `json:"pid"`
}

// Run starts a target and serves until ctx is done or SIGTERM/SIGINT
// arrives, then drains. Start-up problems come back as one error naming
// the problem; nothing is left running.
func Run(ctx context.Context, cfg Config, stderr io.Writer) error {
	if cfg.ReadyFD > 0 {
		// Workers must not inherit it, or its reader would not see EOF
		// when the target exits.
		unix.CloseOnExec(cfg.ReadyFD)
	}
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
			if sig == syscall.SIGHUP && s.cfg.InProc {
				s.log.Printf("SIGHUP ignored: in-process workers are not restarted")
				continue
			}
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
	s := &Supervisor{
		cfg:      cfg,
		log:      log.New(stderr, "target: ", 0),
		stderr:   stderr,
		procs:    make([]*proc, cfg.Workers),
		restarts: make([]uint64, cfg.Workers),
		rolling:  make([]uint64, cfg.Workers),
		spawnCh:  make(chan spawnReq),
	}
	if s.model, err = newModel(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.tlsOn() && s.cfg.TLSTicketSeed == "" {
		s.cfg.TLSTicketSeed = newTicketSeed()
	}
	if cfg.InProc {
		setInProcProcs(&cfg)
	}
	defer func() {
		if err != nil {
			s.stop(false)
		}
	}()
	if err := s.preflight(); err != nil {
		return s, err
	}
	if s.cfg.Pin {
		if s.cpus, err = allowedCPUs(); err != nil {
			return s, err
		}
	}
	// Two slots per worker id (an old and a new process overlap in a
	// rolling restart) and one for the supervisor.
	if s.region, s.counters, err = shm.Create(2*cfg.Workers + 1); err != nil {
		return s, err
	}
	s.onTeardown(func() { s.counters.Close(); s.region.Close() })
	for i := range 2 * cfg.Workers {
		s.slotFree = append(s.slotFree, i)
	}
	s.ownSlot().Store(shm.PID, uint64(os.Getpid()))
	if s.metrics, err = listenMetrics(s); err != nil {
		return s, err
	}
	s.onTeardown(s.metrics.close)
	s.onTeardown(s.model.close)
	if err := s.model.listen(s); err != nil {
		return s, err
	}
	go s.spawner()
	s.onTeardown(func() { close(s.spawnCh) })

	for id := range cfg.Workers {
		p, err := s.spawn(id)
		if err != nil {
			return s, err
		}
		s.mu.Lock()
		s.procs[id] = p
		s.watchers.Add(1)
		s.mu.Unlock()
		go s.watch(p)
	}
	s.model.serve(s)
	s.foreign = startForeignWatch(s)
	s.onTeardown(s.foreign.close)
	s.metrics.serve()
	if cfg.RestartEvery > 0 {
		go s.restartEvery(cfg.RestartEvery)
	}
	s.log.Printf("model=%s accept=%s workers=%d pids=%s listening on %s, metrics on %s",
		cfg.Model, s.model.acceptName(), cfg.Workers, s.pidList(), cfg.Addr, s.metrics.url())
	if err := s.notifyReady(); err != nil {
		return s, err
	}
	return s, nil
}

// onTeardown registers a release for the one teardown path.
func (s *Supervisor) onTeardown(f func()) { s.closers = append(s.closers, f) }

// ownSlot is the supervisor's own counter slot (the single model's
// accept errors).
func (s *Supervisor) ownSlot() *shm.Slot { return s.region.Slot(s.region.Slots() - 1) }

// The rest of what a model may use of the supervisor (host).

func (s *Supervisor) logger() *log.Logger    { return s.log }
func (s *Supervisor) allowedCPUs() []int     { return s.cpus }
func (s *Supervisor) slot(p *proc) *shm.Slot { return s.region.Slot(p.slot) }
func (s *Supervisor) lockWorkers() ([]*proc, bool) {
	s.mu.Lock()
	return s.procs, s.stopping
}
func (s *Supervisor) unlockWorkers() { s.mu.Unlock() }

// notifyReady writes the Ready document to -ready-fd and closes it.
func (s *Supervisor) notifyReady() error {
	if s.cfg.ReadyFD <= 0 {
		return nil
	}
	r := Ready{PID: os.Getpid(), Addr: s.cfg.Addr, Model: s.cfg.Model}
	if s.metrics.on() {
		r.MetricsAddr = s.cfg.MetricsAddr
	}
	for id, pid := range s.Workers() {
		r.Workers = append(r.Workers, ReadyWorker{ID: id, PID: pid})
	}
	b, _ := json.Marshal(r)
	f := os.NewFile(uintptr(s.cfg.ReadyFD), "ready")
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("-ready-fd %d: %w", s.cfg.ReadyFD, err)
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

// cleanup is a list of releases to run, last first, when a function
// fails half-way.
type cleanup []func()

func (c *cleanup) add(f func()) { *c = append(*c, f) }

func (c cleanup) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// spawn starts worker id and waits until it is ready. The caller
// installs it and watches it.
func (s *Supervisor) spawn(id int) (_ *proc, err error) {
	var undo cleanup
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	undo.add(func() { unix.Close(pair[0]) })
	defer unix.Close(pair[1]) // the worker's end, once it has its own copy

	slot, err := s.takeSlot(id)
	if err != nil {
		return nil, err
	}
	undo.add(func() { s.freeSlot(slot) })

	mf, err := s.model.files(id)
	if err != nil {
		return nil, err
	}
	passed := append([]namedFile{{fileCounters, int(s.counters.Fd())}, {fileControl, pair[1]}}, mf...)
	if s.cfg.InProc {
		return s.startInProc(id, slot, passed, pair[0])
	}
	files, names, err := childFiles(passed)
	if err != nil {
		return nil, err
	}
	defer closeFiles(files)

	spec, _ := json.Marshal(workerSpec{Config: s.cfg, ID: id, Slot: slot, Slots: s.region.Slots(), Files: names})
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), "GOMAXPROCS="+strconv.Itoa(s.cfg.GOMAXPROCS))
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cpu := -1
	if len(s.cpus) > 0 {
		cpu = s.cpus[id%len(s.cpus)]
	}
	reply := make(chan error, 1)
	s.spawnCh <- spawnReq{cmd: cmd, cpu: cpu, reply: reply}
	if err := <-reply; err != nil {
		return nil, fmt.Errorf("start worker %d: %w", id, err)
	}
	undo.add(func() { cmd.Process.Kill(); cmd.Wait() })

	var msg controlMsg
	if err := readControl(pair[0], startTimeout, &msg); err != nil {
		return nil, err
	}
	if msg.Error != "" {
		return nil, errors.New(msg.Error)
	}
	return &proc{id: id, slot: slot, pid: cmd.Process.Pid, cmd: cmd, ctl: pair[0], inode: msg.Inode, started: time.Now()}, nil
}

func (s *Supervisor) takeSlot(id int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slotFree) == 0 {
		return -1, fmt.Errorf("start worker %d: no free counter slot", id)
	}
	slot := s.slotFree[0]
	s.slotFree = s.slotFree[1:]
	s.region.Slot(slot).Reset()
	return slot, nil
}

func (s *Supervisor) freeSlot(slot int) {
	s.mu.Lock()
	s.slotFree = append(s.slotFree, slot)
	s.mu.Unlock()
}

// readControl reads one JSON message from a control socket within
// timeout.
func readControl(fd int, timeout time.Duration, msg *controlMsg) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(pfd, int(max(time.Until(deadline).Milliseconds(), 0)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("worker not ready after %v", timeout)
		}
		break
	}
	buf := make([]byte, 4096)
	n, _, _, _, err := unix.Recvmsg(fd, buf, nil, 0)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("worker exited during start-up")
	}
	if err := json.Unmarshal(buf[:n], msg); err != nil {
		return fmt.Errorf("worker said %q: %v", buf[:n], err)
	}
	return nil
}

// watch waits for a worker process to exit. A process that was replaced
// by a rolling restart, or exits while the target stops, is done; any
// other exit is a crash, and a new process takes the worker's place.
func (s *Supervisor) watch(p *proc) {
	defer s.watchers.Done()
	status, cpu, err := p.wait()
	s.mu.Lock()
	slot := s.region.Slot(p.slot)
	s.retired = append(s.retired, retiredWorker{id: p.id, pid: p.pid, cpuSeconds: cpu, counts: slot.Snapshot()})
	slot.AddHistogramTo(&s.retiredHist)
	slot.AddHistTo(shm.HandshakeDuration, &s.retiredTLSHist)
	s.trimRetired(p.id)
	s.draining = slices.DeleteFunc(s.draining, func(d *proc) bool { return d == p })
	s.slotFree = append(s.slotFree, p.slot)
	if status == exitGraceOver {
		s.graceOver = append(s.graceOver, fmt.Sprintf("worker %d (pid %d)", p.id, p.pid))
	}
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
	how := "exited"
	if err != nil {
		how = err.Error()
	}
	s.log.Printf("worker %d (pid %d) %s; restarting", p.id, p.pid, how)
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		s.restartMu.Lock()
		if s.isStopping() {
			s.restartMu.Unlock()
			return
		}
		np, err := s.spawn(p.id)
		if err == nil {
			s.mu.Lock()
			s.procs[p.id] = np
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
// returns when every worker process has exited. It returns an error when
// the grace period ran out with connections still open.
func (s *Supervisor) Stop() error {
	err := s.stop(true)
	s.log.Printf("stopped")
	return err
}

// stop is the one way out, for a failed Start (graceful false: workers
// are killed) and for Stop: no more restarts, the model stops accepting,
// workers drain or die, then everything Start acquired is released.
func (s *Supervisor) stop(graceful bool) error {
	s.restartMu.Lock() // no rolling restart step half done
	s.mu.Lock()
	s.stopping = true
	procs := s.live()
	s.mu.Unlock()
	s.restartMu.Unlock()
	s.model.stopAccepting()
	sig := syscall.SIGKILL
	if graceful {
		sig = syscall.SIGTERM
	}
	for _, p := range procs {
		s.signal(p, sig)
	}
	done := make(chan struct{})
	go func() { s.watchers.Wait(); close(done) }()
	var killed []string
	select {
	case <-done:
	case <-time.After(s.cfg.Grace + 2*time.Second):
		s.mu.Lock()
		for _, p := range s.live() {
			if p.cmd == nil {
				continue // an in-process worker's drain is bounded by grace
			}
			s.log.Printf("worker %d (pid %d) still running after grace; killing", p.id, p.pid)
			killed = append(killed, fmt.Sprintf("worker %d (pid %d)", p.id, p.pid))
			p.cmd.Process.Kill()
		}
		s.mu.Unlock()
		<-done
	}
	s.teardown.Do(func() {
		for i := len(s.closers) - 1; i >= 0; i-- {
			s.closers[i]()
		}
	})
	if !graceful {
		return nil
	}
	s.mu.Lock()
	cut := append(s.graceOver, killed...)
	s.mu.Unlock()
	if len(cut) > 0 {
		return fmt.Errorf("grace %v ran out with connections still open (closed): %s", s.cfg.Grace, strings.Join(cut, ", "))
	}
	return nil
}

// live lists the running worker processes. s.mu is held.
func (s *Supervisor) live() []*proc {
	var out []*proc
	for _, p := range append(slices.Clone(s.procs), s.draining...) {
		if p != nil && p.ctl >= 0 {
			out = append(out, p)
		}
	}
	return out
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
	conflicts, what := sockets.Conflicts, "listening"
	if s.cfg.Proto == ProtoUDP {
		conflicts, what = sockets.ConflictsUDP, "UDP"
	}
	ls, err := conflicts(ap)
	if err != nil {
		return fmt.Errorf("listen %s: cannot list sockets: %w", s.cfg.Addr, err)
	}
	if len(ls) > 0 {
		return fmt.Errorf("listen %s: address already in use (%d %s socket(s) on port %d, e.g. a stale target)", s.cfg.Addr, len(ls), what, ap.Port())
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
