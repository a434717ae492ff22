package main

import (
	"os/exec"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// A port the target holds (its workers' reuseport sockets) is refused
// without -join: gohttp used to join the group and take a share of the
// target's connections. With -join it shares the port on purpose.
func TestRefusesAnotherServersPort(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	cmd := exec.Command(proctest.Bin(t, "gohttp"), "-addr", tg.Addr)
	proctest.WantOneLine(t, cmd, 1, "listen "+tg.Addr+": address already in use")
	// Every connection still goes to the target's own workers (they
	// send X-Worker-Id; gohttp does not).
	for range 50 {
		pid, id, err := proctest.Get(tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if id == "" {
			t.Fatalf("pid %s answered without X-Worker-Id: not the target", pid)
		}
	}

	join := exec.Command(proctest.Bin(t, "gohttp"), "-join", "-addr", tg.Addr)
	if err := join.Start(); err != nil {
		t.Fatal(err)
	}
	defer join.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- join.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("gohttp -join exited: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}
