package peers

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/budget"
	"github.com/lbbench/lbbench/internal/sockets"
)

// GoHTTP is N independent bin/gohttp processes sharing a port through
// SO_REUSEPORT: plain Go net/http services, no supervisor.
type GoHTTP struct {
	Addr  string
	procs []*goProc
}

type goProc struct {
	cmd    *exec.Cmd
	stderr *SyncBuffer
	done   chan error
}

// GoHTTPOptions configure StartGoHTTP.
type GoHTTPOptions struct {
	// NetNS, if set, is the network namespace to run in (netpath's).
	NetNS string
	Bin   string // bin/gohttp
	Addr  string // HOST:PORT
	Procs int
	Work  time.Duration // CPU burnt per request
	CPUs  []int
}

// StartGoHTTP starts the processes one after another and waits until
// each has its socket in the reuseport group.
func StartGoHTTP(o GoHTTPOptions) (*GoHTTP, error) {
	ap, err := sockets.ParseAddr(o.Addr)
	if err != nil {
		return nil, err
	}
	g := &GoHTTP{Addr: o.Addr}
	for i := range o.Procs {
		bin, args := o.Bin, []string{"-addr", o.Addr, "-work", o.Work.String()}
		if i > 0 {
			args = append(args, "-join") // the first one's group
		}
		if len(o.CPUs) > 0 {
			bin, args = budget.Pin(o.CPUs, bin, args...)
		}
		p := &goProc{cmd: exec.Command(bin, args...), stderr: &SyncBuffer{}, done: make(chan error, 1)}
		p.cmd.Stderr = p.stderr
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := launcher(o.NetNS)(p.cmd); err != nil {
			g.Stop()
			return nil, fmt.Errorf("start gohttp: %w", err)
		}
		go func() { p.done <- p.cmd.Wait() }()
		g.procs = append(g.procs, p)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var ls []sockets.Listener
			within(o.NetNS, func() (err error) { ls, err = sockets.Listeners(ap.Port()); return err })
			if len(ls) > i {
				break
			}
			select {
			case err := <-p.done:
				p.done <- err
				g.Stop()
				return nil, fmt.Errorf("gohttp exited: %v: %s", err, strings.TrimSpace(p.stderr.String()))
			default:
			}
			if time.Now().After(deadline) {
				g.Stop()
				return nil, fmt.Errorf("gohttp %d of %d not listening on %s after 5s", i+1, o.Procs, o.Addr)
			}
		}
	}
	return g, nil
}

// Workers are the processes' pids.
func (g *GoHTTP) Workers() []int {
	var pids []int
	for _, p := range g.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// Stop sends SIGTERM to every process (they drain) and waits for them,
// killing any still there after 10 s.
func (g *GoHTTP) Stop() error {
	for _, p := range g.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	for i, p := range g.procs {
		select {
		case err := <-p.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("gohttp %d: %v: %s", i, err, lastLine(p.stderr.String())))
			}
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("gohttp %d: still running 10s after SIGTERM; killed", i))
		}
	}
	return errors.Join(errs...)
}

// Pid is the first process's pid (there is no parent of them all).
func (g *GoHTTP) Pid() int { return g.procs[0].cmd.Process.Pid }
