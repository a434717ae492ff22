package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/lbbench/lbbench/internal/proctest"
)

// Thousands of workers made the chi-square p-value panic (go-moremath's
// GammaIncComp gave up on large df): loadgen must write its JSON and exit
// 0 with a p-value in [0, 1], whether the thousands come from -workers or
// from a server that names a new pid for every request (fork per
// connection).
func TestThousandsOfWorkersWriteResults(t *testing.T) {
	var next atomic.Int64
	forking := hostile(t, eachRequest(func(c net.Conn) bool {
		pid := 100000 + next.Add(1)
		_, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: " + strconv.FormatInt(pid, 10) + "\r\n\r\nok"))
		return err == nil
	}))
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"workers-20000", []string{"-workers", "20000", "-c", "2", "-n", "2000", "http://" + tg.Addr + "/"}},
		{"pids-5000", []string{"-c", "4", "-n", "5000", forking}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "r.json")
			cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"-q", "-json", out}, c.args...)...)
			if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			type figures struct {
				Workers int      `json:"workers"`
				PValue  *float64 `json:"p_value"`
			}
			var doc struct {
				Requests int64 `json:"requests"`
				Fairness struct {
					Requests, Connections figures
				} `json:"fairness"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if doc.Requests == 0 {
				t.Fatalf("no requests: %s", b)
			}
			for k, f := range map[string]figures{"requests": doc.Fairness.Requests, "connections": doc.Fairness.Connections} {
				if f.PValue == nil || *f.PValue < 0 || *f.PValue > 1 {
					t.Errorf("fairness %s: workers %d p %v", k, f.Workers, f.PValue)
				}
			}
			if f := doc.Fairness.Requests; f.Workers < 2000 {
				t.Errorf("fairness over %d workers, want thousands", f.Workers)
			}
		})
	}
}
