package models

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/serve"
	"github.com/lbbench/lbbench/internal/shm"
)

// The supervisor starts a worker by re-executing its own binary with the
// worker's spec in this environment variable.
const workerEnv = "LBBENCH_WORKER"

// workerSpec is what a worker process is told.
type workerSpec struct {
	Config
	ID    int      `json:"id"`
	Slot  int      `json:"slot"`  // shm slot
	Slots int      `json:"slots"` // shm slots in all
	Files []string `json:"files"` // names of the inherited files, from descriptor 3 on
	// inproc: the worker is a goroutine of the supervisor's process.
	inproc bool
}

// IsWorker reports whether this process was started as a worker.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// RunWorker runs a worker process and returns its exit status. Start-up
// errors go to the supervisor over the control socket.
func RunWorker() int {
	log.SetFlags(0)
	log.SetPrefix(fmt.Sprintf("target: worker (pid %d): ", os.Getpid()))
	var spec workerSpec
	if err := json.Unmarshal([]byte(os.Getenv(workerEnv)), &spec); err != nil {
		log.Printf("bad worker spec: %v", err)
		return 1
	}
	files := inheritedFrom(spec.Files)
	cfd, err := files.fd(fileControl)
	if err != nil {
		log.Print(err)
		return 1
	}
	// Non-blocking, so that it waits in the netpoller and a deadline can
	// wake whoever reads it.
	unix.SetNonblock(cfd, true)
	ctl := os.NewFile(uintptr(cfd), fileControl)
	w, err := newWorker(spec, files, ctl)
	if err != nil {
		tell(ctl, controlMsg{Error: err.Error()})
		return 1
	}
	return w.run()
}

func tell(ctl *os.File, msg controlMsg) {
	b, _ := json.Marshal(msg)
	ctl.Write(b)
}

// worker is one worker process: a source of connections (the model's)
// and the server that serves them.
type worker struct {
	spec  workerSpec
	files inherited
	ctl   *os.File
	slot  *shm.Slot
	// serve is the serving path (internal/serve) every connection the
	// source yields is handed to, by serve.ServeFD.
	serve serve.Path
	lean  *serve.Lean    // -http lean
	std   *serve.NetHTTP // -http nethttp
	src   source
}

func newWorker(spec workerSpec, files inherited, ctl *os.File) (*worker, error) {
	w := &worker{spec: spec, files: files, ctl: ctl}
	fd, err := files.fd(fileCounters)
	if err != nil {
		return nil, err
	}
	region, err := shm.MapFD(fd, spec.Slots)
	if err != nil {
		return nil, err
	}
	w.slot = region.Slot(spec.Slot)
	w.slot.Store(shm.PID, uint64(os.Getpid()))
	w.slot.Store(shm.Capacity, fdCapacity())
	opts, err := serveOptions(&w.spec.Config, w.slot, spec.ID, os.Getpid())
	if err != nil {
		return nil, err
	}
	if spec.HTTP == HTTPNetHTTP {
		w.std = serve.NewNetHTTP(opts)
		w.serve = w.std
	} else {
		if w.lean, err = serve.NewLean(opts); err != nil {
			return nil, err
		}
		w.serve = w.lean
	}
	m, err := newModel(&w.spec.Config)
	if err != nil {
		return nil, err
	}
	if w.src, err = m.source(w); err != nil {
		return nil, err
	}
	return w, nil
}

// serveOptions is what the serving path takes from the configuration;
// under TLS the worker loads its certificate here.
func serveOptions(c *Config, slot *shm.Slot, id, pid int) (serve.Options, error) {
	tc, err := c.tlsConfig()
	return serve.Options{Slot: slot, ID: id, PID: pid, Work: c.Work, Sleep: c.Sleep,
		HeaderTimeout: c.HeaderTimeout, IdleTimeout: c.IdleTimeout, Locality: c.Locality, TLS: tc}, err
}

// fdCapacity is how many more descriptors this process may open: one
// per connection (connections are never duplicated), less a few the
// runtime may want.
func fdCapacity() uint64 {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return 1 << 20
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	const reserve = 8
	if free := int64(lim.Cur) - int64(len(ents)) - reserve; free > 0 {
		return uint64(free)
	}
	return 0
}

// run serves until SIGTERM/SIGINT, the supervisor's going away, or the
// source failing for good; then it drains. The exit status says whether
// the grace period ran out with connections still open.
func (w *worker) run() int {
	sigs := make(chan os.Signal, 1)
	if !w.spec.inproc { // in-process, the supervisor's signals are its own
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}

	tell(w.ctl, controlMsg{Inode: w.src.inode()})

	// ended closes when the source stops by itself (the supervisor went
	// away, or accept failed for good): the worker then exits and the
	// supervisor, if alive, starts another.
	ended := make(chan struct{})
	go func() {
		w.src.run(w.serve.ServeFD)
		close(ended)
	}()
	if _, ok := w.src.(interface{ ownsControl() }); !ok {
		go func() {
			io.Copy(io.Discard, w.ctl)
			if !w.spec.inproc {
				log.Printf("supervisor gone; stopping")
			}
			select {
			case sigs <- syscall.SIGTERM:
			default:
			}
		}()
	}
	select {
	case <-sigs:
	case <-ended:
	}
	w.src.stop()
	<-ended
	if !w.serve.Drain(w.spec.Grace) {
		log.Printf("grace %v over with connections still open; closed them", w.spec.Grace)
		return exitGraceOver
	}
	return 0
}
