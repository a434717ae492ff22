package syscount

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// TestCountsAChild: a child that makes a known number of extra calls is
// counted with them, and nothing is left attached after Close.
func TestCountsAChild(t *testing.T) {
	c, err := Start()
	if errors.Is(err, ErrNoBPF) && os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	count := func(script string) uint64 {
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		return c.Count(cmd.Process.Pid)
	}
	base := count("exec true")
	// 1000 more getppid-free builtins: each ": > /dev/null" is an
	// open, a dup2 or two and a close in dash; measure the difference.
	busy := count("i=0; while [ $i -lt 1000 ]; do : > /dev/null; i=$((i+1)); done")
	if base == 0 || busy < base+2000 {
		t.Errorf("calls: %d for exec true, %d with 1000 redirections", base, busy)
	}
}
