package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// TestReportMarksLoadgenBound: a sample whose loadgen could not send as
// asked (its own self-check, in a real run against a slow target) is
// marked in raw.txt and flagged in REPORT.md, in its cell and in the
// summary; the sample loadgen did not limit is not.
func TestReportMarksLoadgenBound(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1", "-sleep", "5ms")
	dir := t.TempDir()
	res, err := openResultsFile(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		args  []string
	}{
		// One connection cannot carry 2000 requests/s at 5 ms each.
		{"reuseport", []string{"-rate", "2000", "-c", "1"}},
		{"single", []string{"-rate", "50", "-c", "4"}},
	} {
		name := "Accept/model=" + c.model + "/workers=1/conn=keepalive"
		out := filepath.Join(dir, "json", c.model+".json")
		args := append([]string{"-q", "-d", "1s", "-json", out, "-name", name}, c.args...)
		cmd := exec.Command(proctest.Bin(t, "loadgen"), append(args, "http://"+tg.Addr+"/")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("loadgen %v: %v\n%s", args, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var d rundoc.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		if want := c.model == "reuseport"; d.SelfCheck.Bottleneck != want {
			t.Fatalf("%s: self-check bottleneck %v, want %v: %+v", c.model, d.SelfCheck.Bottleneck, want, d.SelfCheck)
		}
		if err := res.add(rundoc.Result(&d, name, fileConfig()), ""); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "raw.txt"))
	if n := strings.Count(string(raw), " 1 "+rundoc.BoundUnit); n != 1 {
		t.Errorf("raw.txt has %d loadgen-bound marks, want 1:\n%s", n, raw)
	}
	if err := results.Write(dir, sections()); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "REPORT.md"))
	rep := string(md)
	if !strings.Contains(rep, "- workers=1 reuseport: 1 of 1 samples (sent ") {
		t.Errorf("REPORT.md does not name the loadgen-bound cell with its reason:\n%s", rep)
	}
	if !strings.Contains(rep, "(† loadgen-bound samples in 1 cells: see the table)") {
		t.Errorf("the summary does not say a cell is loadgen-bound:\n%s", rep)
	}
	// Every line of the table marks the reuseport cell, never single's.
	for _, l := range strings.Split(rep, "\n") {
		if !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| |") {
			continue
		}
		cells := strings.Split(l, "|")
		if len(cells) < 5 {
			continue
		}
		if !strings.Contains(cells[3], "†1") || strings.Contains(cells[4], "†") {
			t.Errorf("table line %q: want †1 on reuseport (column 1) only", l)
		}
	}
	if problems := results.Check(mustRead(t, dir), 1, nil); len(problems) > 0 {
		t.Errorf("check counts the mark as a figure: %v", problems)
	}
}

func mustRead(t *testing.T, dir string) *results.Set {
	t.Helper()
	s, err := results.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
