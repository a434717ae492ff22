// Package peers starts what lbbench measures and is measured against:
// the servers (bin/target, nginx with its own access log as ground
// truth, HAProxy, plain Go net/http processes, Node's cluster, gunicorn
// and uvicorn), each a Server, and the peer load generators wrk and ab.
// What makes a comparison fair (the CPU budget) and the meters are
// internal/budget's.
package peers

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/budget"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/netpath"
)

// A Server is any server the suite starts and measures: the target,
// nginx, HAProxy, Go net/http processes, Node's cluster, gunicorn and
// uvicorn. Stop ends it and waits until all of its processes are gone;
// Pid is its main process, the root of its process tree.
type Server interface {
	Stop() error
	Pid() int
}

var (
	_ Server = (*Target)(nil)
	_ Server = (*Nginx)(nil)
	_ Server = (*HAProxy)(nil)
	_ Server = (*GoHTTP)(nil)
	_ Server = (*Forked)(nil)
)

// daemon is a server process the suite started in the foreground, with a
// private directory for its configuration, pid file and logs.
type daemon struct {
	name   string
	dir    string
	cmd    *exec.Cmd
	stderr *SyncBuffer
	done   chan error
}

// newDaemon makes the private directory of a server called name.
func newDaemon(name string) (*daemon, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s not found: run make setup (it installs Debian's %s)", name, name)
	}
	dir, err := os.MkdirTemp("", "lbbench-"+name+"-")
	if err != nil {
		return nil, err
	}
	return &daemon{name: name, dir: dir, stderr: &SyncBuffer{}, done: make(chan error, 1)}, nil
}

// launch is how a daemon's process is started and when it is up.
type launch struct {
	netns string // the network namespace to start it in ("": ours)
	cpus  []int  // pin it (and what it forks) to these, if any
	addr  string // it is up once this accepts connections
	// stdout, if not nil, gets its standard output; errLog names a file
	// in its directory with what it says when it fails to start.
	stdout *os.File
	errLog string
	argv   []string // the command and its arguments
	env    []string // added to our environment
	dir    string   // its working directory ("": ours)
}

// start runs l.argv as l says and waits up to 5 s until l.addr accepts
// connections. On failure it returns what the server said (its stderr,
// or the file errLog in its directory) and removes the directory.
func (d *daemon) start(l launch) error {
	bin, args := l.argv[0], l.argv[1:]
	if len(l.cpus) > 0 {
		bin, args = budget.Pin(l.cpus, bin, args...)
	}
	addr, stdout, errLog := l.addr, l.stdout, l.errLog
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stderr = d.stderr
	if l.env != nil {
		d.cmd.Env = append(os.Environ(), l.env...)
	}
	d.cmd.Dir = l.dir
	if stdout != nil {
		d.cmd.Stdout = stdout
	}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := launcher(l.netns)(d.cmd); err != nil {
		os.RemoveAll(d.dir)
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-d.done:
			msg := strings.TrimSpace(d.stderr.String())
			if b, _ := os.ReadFile(filepath.Join(d.dir, errLog)); errLog != "" && len(b) > 0 {
				msg += " " + strings.TrimSpace(string(b))
			}
			os.RemoveAll(d.dir)
			return fmt.Errorf("%s exited: %v: %s", d.name, err, msg)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop(syscall.SIGKILL)
			return fmt.Errorf("%s not accepting on %s after 5s", d.name, addr)
		}
	}
}

// stop sends sig, waits up to 5 s (then kills), waits for the processes
// the server started to go, and removes the directory.
func (d *daemon) stop(sig syscall.Signal) error {
	tree, _ := kernel.Proc.Tree(d.cmd.Process.Pid)
	d.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-d.done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		err = <-d.done
		err = errors.Join(fmt.Errorf("%s: no exit 5s after %v; killed", d.name, sig), err)
	}
	// Workers die with their master (they watch it); wait for them.
	for _, pid := range tree {
		for i := 0; i < 250 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	os.RemoveAll(d.dir)
	return err
}

// pid is the server's main process.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// children are the processes the main process started (nginx's workers).
func (d *daemon) children() []int {
	tree, _ := kernel.Proc.Tree(d.pid())
	if len(tree) == 0 {
		return nil
	}
	return tree[1:]
}

// launcher starts a command in network namespace netns ("": where we
// are).
func launcher(netns string) func(*exec.Cmd) error {
	if netns == "" {
		return (*exec.Cmd).Start
	}
	return func(c *exec.Cmd) error { return netpath.Start(netns, c) }
}

// within runs f in network namespace netns ("": where we are).
func within(netns string, f func() error) error {
	if netns == "" {
		return f()
	}
	return netpath.Do(netns, f)
}
