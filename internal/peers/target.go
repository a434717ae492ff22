package peers

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Target is a running bin/target.
type Target struct {
	Cmd    *exec.Cmd
	Stderr *SyncBuffer
	done   chan struct{}
	err    error
}

// StartTarget starts the target binary with args and waits (up to 10 s)
// until it says it is listening.
func StartTarget(bin string, args ...string) (*Target, error) {
	tg := &Target{Stderr: &SyncBuffer{}, done: make(chan struct{})}
	tg.Cmd = exec.Command(bin, args...)
	tg.Cmd.Stderr = tg.Stderr
	tg.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := tg.Cmd.Start(); err != nil {
		return nil, err
	}
	go func() { tg.err = tg.Cmd.Wait(); close(tg.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(tg.Stderr.String(), "listening on") {
		select {
		case <-tg.done:
			return nil, fmt.Errorf("target exited at start-up: %s", lastLine(tg.Stderr.String()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tg.Kill()
			return nil, fmt.Errorf("target not ready after 10s: %s", lastLine(tg.Stderr.String()))
		}
	}
	return tg, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Stop sends SIGTERM and waits up to timeout for the exit status; then it
// kills.
func (tg *Target) Stop(timeout time.Duration) error {
	tg.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tg.done:
		return tg.err
	case <-time.After(timeout):
		tg.Kill()
		return fmt.Errorf("target still running %v after SIGTERM; killed", timeout)
	}
}

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
