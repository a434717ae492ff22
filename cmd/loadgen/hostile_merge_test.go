package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// together runs one loadgen per args, all started at the same moment
// with -start-at, and returns their -json files.
func together(t *testing.T, url string, args ...[]string) []string {
	t.Helper()
	dir := t.TempDir()
	startAt := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	files := make([]string, len(args))
	var wg sync.WaitGroup
	for g, a := range args {
		files[g] = filepath.Join(dir, fmt.Sprintf("g%d.json", g))
		wg.Go(func() {
			argv := append(append([]string{"-q", "-start-at", startAt, "-json", files[g]}, a...), url)
			if b, err := exec.Command(proctest.Bin(t, "loadgen"), argv...).CombinedOutput(); err != nil {
				t.Errorf("generator %d: %v\n%s", g, err, b)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return files
}

// one makes a single run and returns its -json file.
func one(t *testing.T, path string, args ...string) string {
	t.Helper()
	argv := append([]string{"-q", "-json", path}, args...)
	if b, err := exec.Command(proctest.Bin(t, "loadgen"), argv...).CombinedOutput(); err != nil {
		t.Fatalf("loadgen %v: %v\n%s", argv, err, b)
	}
	return path
}

// TestHostileMergeKeepsUDP: two UDP generators run together and merged
// keep every UDP figure, each the sum (or reply-weighted share) of the
// inputs'; per-pid replies equal what each target worker says it sent;
// the -bench line carries the UDP units; the summary reads as UDP; the
// result is named as a merge, not after its first input.
func TestHostileMergeKeepsUDP(t *testing.T) {
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "2")
	gen := []string{"-flows", "6", "-rate", "1500", "-d", "1s", "-workers", "2"}
	files := together(t, udpURL(tg), gen, gen)
	dir := filepath.Dir(files[0])
	merged, bench := filepath.Join(dir, "merged.json"), filepath.Join(dir, "merged.txt")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-json", merged, "-bench", bench}, files...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
		t.Fatalf("merge: status %d: %s", code, stderr)
	}
	m := readDoc(t, merged)
	if m.UDP == nil {
		t.Fatalf("merged result has no udp section")
	}
	var sent, received, lost, flows, multi, requests int64
	var fromFirst float64
	for _, f := range files {
		d := readDoc(t, f)
		if d.UDP == nil {
			t.Fatalf("%s: no udp section", f)
		}
		sent += d.UDP.Sent
		received += d.UDP.Received
		lost += d.UDP.Lost
		flows += int64(d.UDP.Flows)
		multi += d.UDP.FlowsMultiWorker
		requests += d.Requests
		fromFirst += d.UDP.FirstWorkerShare * float64(d.UDP.Received)
	}
	u := m.UDP
	if u.Sent != sent || u.Received != received || u.Lost != lost || int64(u.Flows) != flows || u.FlowsMultiWorker != multi || m.Requests != requests {
		t.Errorf("merged udp %+v, %d replies; the inputs sum to sent %d, received %d, lost %d, flows %d, multiworker %d, %d replies",
			*u, m.Requests, sent, received, lost, flows, multi, requests)
	}
	if want := fromFirst / float64(received); math.Abs(u.FirstWorkerShare-want) > 1e-12 {
		t.Errorf("merged first-worker share %v, want %v (weighted by replies)", u.FirstWorkerShare, want)
	}
	out := proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_datagrams_total"], "pid", "direction", "out")
	var served float64
	for pid, n := range out {
		served += n
		if pc := m.PerPID[pid]; (pc == nil && n > 0) || (pc != nil && float64(pc.Requests) != n) {
			t.Errorf("pid %s: the worker answered %v, the merge attributes %+v", pid, n, pc)
		}
	}
	if served != float64(m.Requests) {
		t.Errorf("the target answered %v datagrams, the merge counts %d replies", served, m.Requests)
	}
	b, err := os.ReadFile(bench)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Benchmark") {
			line = l
		}
	}
	for _, unit := range []string{"loss-ratio", "first-worker-share", "multiworker-flows"} {
		if !strings.Contains(line, unit) {
			t.Errorf("-bench line lacks %s: %q", unit, line)
		}
	}
	if !strings.Contains(line, "generators=2") {
		t.Errorf("-bench line is not named as a merge of 2 generators: %q", line)
	}
	s := stdout.String()
	for _, tcp := range []string{"pool of", "new conn/s", "TIME_WAIT"} {
		if strings.Contains(s, tcp) {
			t.Errorf("the UDP summary says %q:\n%s", tcp, s)
		}
	}
	if !strings.Contains(s, "Datagrams") || !strings.Contains(s, "Flows") {
		t.Errorf("the summary lacks the datagram and flow lines:\n%s", s)
	}
}

// TestHostileMergeDuplicates: the same run given twice, by the same
// name, through ./, or as a copy, is refused with one line and status 2
// (it would double every count).
func TestHostileMergeDuplicates(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	dir := t.TempDir()
	a := one(t, filepath.Join(dir, "a.json"), "-c", "2", "-n", "100", "http://"+tg.Addr+"/")
	b, _ := os.ReadFile(a)
	c := filepath.Join(dir, "copy.json")
	os.WriteFile(c, b, 0o644)
	for _, args := range [][]string{{a, a}, {"a.json", "./a.json"}, {a, c}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			merged := filepath.Join(dir, "merged.json")
			cmd := exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-q", "-json", merged}, args...)...)
			cmd.Dir = dir
			proctest.WantOneLine(t, cmd, 2, "is the same run as")
			if _, err := os.Stat(merged); err == nil {
				t.Errorf("a refused merge wrote %s", merged)
			}
		})
	}
}

// TestHostileMergeMismatch: runs that are not parts of one load are
// refused with one line naming what differs: not overlapping in time,
// closed with open loop, constant with Poisson, other -reqs-per-conn;
// a JSON object that is no loadgen result is called that.
func TestHostileMergeMismatch(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	url := "http://" + tg.Addr + "/"
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	closed := one(t, path("closed.json"), "-c", "2", "-n", "100", url)
	closed2 := one(t, path("closed2.json"), "-c", "2", "-n", "100", url)
	constant := one(t, path("constant.json"), "-rate", "200", "-d", "200ms", url)
	poisson := one(t, path("poisson.json"), "-rate", "200", "-d", "200ms", "-poisson", url)
	ka := one(t, path("ka.json"), "-conn", "keepalive", "-c", "2", "-n", "100", url)
	ka2 := one(t, path("ka2.json"), "-conn", "keepalive", "-reqs-per-conn", "2", "-c", "2", "-n", "100", url)
	foo := path("foo.json")
	os.WriteFile(foo, []byte(`{"foo":1}`), 0o644)
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"apart in time", []string{closed, closed2}, "did not overlap in time"},
		{"closed and open loop", []string{closed, constant}, "another loop (open loop, rate 200, not closed loop)"},
		{"constant and poisson", []string{constant, poisson}, "another arrival process (poisson, not constant)"},
		{"reqs-per-conn", []string{ka, ka2}, "another reqs_per_conn (2, not 0)"},
		{"not a result", []string{closed, foo}, "foo.json: not a loadgen result"},
	} {
		t.Run(c.name, func(t *testing.T) {
			proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "loadgen"), append([]string{"merge", "-q"}, c.files...)...), 1, c.want)
		})
	}
}
