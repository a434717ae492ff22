package models

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// In-process workers (-inproc): the workers are not processes but
// goroutines of the supervisor's own process, one accept loop each, with
// GOMAXPROCS set to the worker count: the "several goroutines own a
// listener" variant of a Go service. Each worker is built and run by the
// same code as a worker process (newWorker, worker.run), on its own
// socket (reuseport) or all on the shared one; the supervisor tells one
// to stop by shutting down its end of the control socket, as a worker
// process notices its supervisor going away. A goroutine cannot be
// killed, paused or restarted on its own: in-process workers have no
// rolling restarts and no crash recovery, and every one of them carries
// the supervisor's pid (loadgen -fair-by worker counts their ids).

// startInProc starts worker id as a goroutine; files are the model's and
// the shared ones, which the worker gets as duplicates it owns.
func (s *Supervisor) startInProc(id, slot int, passed []namedFile, ctl int) (*proc, error) {
	files := inherited{}
	for _, f := range passed {
		dup, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, fd := range files {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("worker %d: %s: %w", id, f.name, err)
		}
		files[f.name] = dup
	}
	unix.SetNonblock(files[fileControl], true)
	spec := workerSpec{Config: s.cfg, ID: id, Slot: slot, Slots: s.region.Slots(), inproc: true}
	ctlFile := os.NewFile(uintptr(files[fileControl]), fileControl)
	w, err := newWorker(spec, files, ctlFile)
	if err != nil {
		ctlFile.Close()
		for name, fd := range files {
			if name != fileControl {
				unix.Close(fd)
			}
		}
		return nil, err
	}
	p := &proc{id: id, slot: slot, pid: os.Getpid(), ctl: ctl, done: make(chan int, 1)}
	go func() { p.done <- w.run() }()
	return p, nil
}

// setInProcProcs gives the process one P per worker (times -gomaxprocs).
func setInProcProcs(c *Config) { runtime.GOMAXPROCS(c.Workers * c.GOMAXPROCS) }

// signal asks a worker to stop: SIGTERM drains, SIGKILL kills. An
// in-process worker is told through its control socket and drains either
// way (its grace bounds it); the socket is read under s.mu, since the
// worker's watcher closes it (and sets -1) when the worker ends.
func (s *Supervisor) signal(p *proc, sig syscall.Signal) {
	if p.cmd == nil {
		s.mu.Lock()
		if p.ctl >= 0 {
			unix.Shutdown(p.ctl, unix.SHUT_WR)
		}
		s.mu.Unlock()
		return
	}
	p.cmd.Process.Signal(sig)
}

// wait waits for the worker to exit and returns its exit status, CPU
// time in seconds (a process's; 0 in-process) and the error to log.
func (p *proc) wait() (status int, cpu float64, err error) {
	if p.cmd == nil {
		return <-p.done, 0, nil
	}
	err = p.cmd.Wait()
	ps := p.cmd.ProcessState
	return ps.ExitCode(), (ps.UserTime() + ps.SystemTime()).Seconds(), err
}
