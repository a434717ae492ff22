package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
)

// TestNetnsClients: the target in its namespace, one loadgen in each of
// two client namespaces (-netns, -src inside them), attributed by the
// kernel and by the header alike; merged, the per-pid counts equal the
// target's own counters.
func TestNetnsClients(t *testing.T) {
	needRoot(t)
	top, err := netpath.Up(netpath.Options{Clients: 2, RSS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Down()
	port := proctest.FreePort(t)
	addr := top.Service.String() + ":" + strconv.Itoa(port)
	metrics := top.Service.String() + ":" + strconv.Itoa(port+1)
	tg, err := peers.StartTargetIn(top.Target, proctest.Bin(t, "target"), "-model", "reuseport", "-workers", "2", "-addr", addr, "-metrics-addr", metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	dir := t.TempDir()
	var files []string
	var wg sync.WaitGroup
	for i, c := range top.Clients {
		out := filepath.Join(dir, fmt.Sprintf("c%d.json", i))
		files = append(files, out)
		wg.Go(func() {
			cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-netns", c.NS, "-src", c.Src, "-c", "8", "-n", "3000",
				"-conn", "close", "-attribute", "both", "-workers", "2", "-json", out, "http://"+addr+"/")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("loadgen in %s: %v\n%s", c.NS, err, b)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, f := range files {
		d := readDoc(t, f)
		if a := d.Attribution; d.Errors != 0 || a.Disagreements != 0 || a.Unresolved != 0 || a.Missed != 0 {
			t.Errorf("%s: %d errors, attribution %+v", f, d.Errors, a)
		}
	}
	merged := filepath.Join(dir, "merged.json")
	var out bytes.Buffer
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-q", "-json", merged}, files...)...)
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("merge: %v %s", err, out.String())
	}
	m := readDoc(t, merged)
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	served := map[string]int64{}
	for _, line := range strings.Split(body.String(), "\n") {
		if !strings.HasPrefix(line, "lbbench_target_requests_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `pid="`)
		pid, _, _ := strings.Cut(rest, `"`)
		n, _ := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		served[pid] += int64(n)
	}
	if m.Requests != 6000 || len(served) != 2 {
		t.Fatalf("merged %d requests; target served %v", m.Requests, served)
	}
	for pid, n := range served {
		if pc := m.PerPID[pid]; pc == nil || pc.Requests != n {
			t.Errorf("pid %s served %d, the merged run says %+v", pid, n, pc)
		}
	}
}
