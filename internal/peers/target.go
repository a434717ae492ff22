package peers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/models"
)

// Target is a running bin/target.
type Target struct {
	Cmd    *exec.Cmd
	Stderr *SyncBuffer
	// Ready is what the target said once every worker served: its
	// supervisor and worker pids and addresses.
	Ready models.Ready
	done  chan struct{}
	err   error
}

// StartTarget starts the target binary with args (bin may be a wrapper
// such as taskset that execs the target with them) and waits, up to 10
// s, for the target's Ready document on an inherited pipe (-ready-fd).
func StartTarget(bin string, args ...string) (*Target, error) {
	return StartTargetIn("", bin, args...)
}

// StartTargetIn is StartTarget in network namespace netns ("": here).
func StartTargetIn(netns, bin string, args ...string) (*Target, error) {
	start := launcher(netns)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	tg := &Target{Stderr: &SyncBuffer{}, done: make(chan struct{})}
	tg.Cmd = exec.Command(bin, append(args, "-ready-fd", "3")...)
	tg.Cmd.Stderr = tg.Stderr
	tg.Cmd.ExtraFiles = []*os.File{pw}
	tg.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = start(tg.Cmd)
	pw.Close()
	if err != nil {
		return nil, err
	}
	go func() { tg.err = tg.Cmd.Wait(); close(tg.done) }()
	pr.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(pr).ReadBytes('\n')
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		tg.Kill()
		return nil, fmt.Errorf("target not ready after 10s: %s", lastLine(tg.Stderr.String()))
	case err != nil:
		<-tg.done // closed without a word: it exited
		return nil, fmt.Errorf("target exited at start-up: %s", lastLine(tg.Stderr.String()))
	}
	if err := json.Unmarshal(line, &tg.Ready); err != nil {
		tg.Kill()
		return nil, fmt.Errorf("target's ready line %q: %v", line, err)
	}
	return tg, nil
}

// Stop sends SIGTERM and waits up to 10 s for the exit status; then it
// kills.
func (tg *Target) Stop() error { return tg.StopWithin(10 * time.Second) }

// StopWithin is Stop with another wait than 10 s.
func (tg *Target) StopWithin(timeout time.Duration) error {
	tg.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tg.done:
		return tg.err
	case <-time.After(timeout):
		tg.Kill()
		return fmt.Errorf("target still running %v after SIGTERM; killed", timeout)
	}
}

// Pid is the supervisor's pid (the process bench started, or the
// wrapper that exec'd it).
func (tg *Target) Pid() int { return tg.Cmd.Process.Pid }

// Kill kills the target and waits for it.
func (tg *Target) Kill() {
	tg.Cmd.Process.Kill()
	<-tg.done
}

// Done is closed when the target process has exited.
func (tg *Target) Done() <-chan struct{} { return tg.done }

// Err is the exit error once Done is closed.
func (tg *Target) Err() error { return tg.err }

// SyncBuffer is a bytes.Buffer safe for a writer and readers at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
