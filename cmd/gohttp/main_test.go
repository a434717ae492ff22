package main

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
)

// TestProcessesShareThePort: three independent processes join one
// reuseport group, each answers with its own pid, and SIGTERM ends each
// with status 0.
func TestProcessesShareThePort(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	g, err := peers.StartGoHTTP(peers.GoHTTPOptions{Bin: proctest.Bin(t, "gohttp"), Addr: addr, Procs: 3})
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]bool{}
	for _, p := range g.Workers() {
		pids[strconv.Itoa(p)] = true
	}
	seen := map[string]int{}
	for range 300 {
		pid, _, err := proctest.Get(addr)
		if err != nil {
			t.Fatal(err)
		}
		if !pids[pid] {
			t.Fatalf("X-Worker-Pid %s is none of the processes %v", pid, g.Workers())
		}
		seen[pid]++
	}
	if len(seen) != 3 {
		t.Errorf("processes that answered 300 connections: %v, want all 3", seen)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput: one line and a non-zero status.
func TestBadInput(t *testing.T) {
	plain, err := net.Listen("tcp", "127.0.0.1:0") // no SO_REUSEPORT: the group cannot join
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-addr", "nowhere"}, 2, "-addr"},
		{[]string{"-work", "-1s"}, 2, "-work -1s"},
		{[]string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"-addr", plain.Addr().String()}, 1, "address already in use"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "gohttp"), c.args...), c.code, c.want)
		})
	}
}
