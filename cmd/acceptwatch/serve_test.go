package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// TestWatchServingSide: on the target's single model, whose supervisor
// accepts and hands each connection to a worker, the watch's serving
// side counts, per worker pid, the connections the worker's own
// X-Worker-Pid header named (loadgen's per_pid), and every handoff is
// from the supervisor; -by serving-process makes the fairness figures
// theirs.
func TestWatchServingSide(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "single", "-workers", "3")
	port := tg.Addr[strings.LastIndex(tg.Addr, ":")+1:]
	cmd, stdout, path := startWatch(t, "-port", port, "-d", "3s", "-by", "serving-process", "-workers", "3")
	out := filepath.Join(t.TempDir(), "lg.json")
	if b, err := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-json", out, "-c", "8", "-n", "3000", "-conn", "close", "http://"+tg.Addr+"/").CombinedOutput(); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, b)
	}
	s := readSummary(t, cmd, stdout, path)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var d rundoc.Doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	sv := s.Serving
	if sv == nil || sv.Connections != 3000 || sv.Missed != 0 || sv.Migrated != 0 || sv.AcceptorUnseen != 0 || len(sv.PerPID) != 3 {
		t.Fatalf("serving side %+v, want 3000 connections served by 3 workers", sv)
	}
	for pid, pc := range d.PerPID {
		if c := sv.PerPID[pid]; c == nil || c.Connections != pc.Connections {
			t.Errorf("pid %s: the header says %d connections, the watch %+v", pid, pc.Connections, c)
		}
	}
	sup := tg.Cmd.Process.Pid
	var handed int64
	for _, h := range sv.Handoffs {
		if h.AcceptorPID != sup || h.ServerPID == sup {
			t.Errorf("handoff %+v: want from the supervisor %d to a worker", h, sup)
		}
		handed += h.Connections
	}
	if handed != 3000 || s.By != "serving-process" || s.Fairness.Total != 3000 || s.Fairness.Workers != 3 {
		t.Errorf("%d connections handed over; fairness by %s %+v", handed, s.By, s.Fairness)
	}
	if !strings.Contains(stdout.String(), "Accepted by 1 process(es), served by 3: 3000 of 3000 connections handed to another process") {
		t.Errorf("summary:\n%s", stdout.String())
	}
}
