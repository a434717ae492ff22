package main

import (
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
)

// TestServingMatchesForkedServers: for servers whose primary forks the
// workers (Node.js cluster in both scheduling policies, gunicorn on one
// socket and with --reuse-port, uvicorn), the kernel's serving
// attribution names, response for response, the pid each worker sends,
// and its per-pid counts equal the server's own log (gunicorn's access
// log with %(p)s; the app's pid log for the others). Under Node's rr the
// primary accepts every connection and serves none; elsewhere each
// worker serves what it accepted.
func TestServingMatchesForkedServers(t *testing.T) {
	needRoot(t)
	for _, kind := range peers.ForkedKinds {
		t.Run(kind, func(t *testing.T) {
			addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
			f, err := peers.StartForked(peers.ForkedOptions{Kind: kind, Addr: addr, Workers: 3, Log: true})
			if err != nil {
				if strings.Contains(err.Error(), "make setup") && os.Getenv("CI") == "" {
					t.Skip(err)
				}
				t.Fatal(err)
			}
			defer f.Stop()
			var want int64
			kernel := map[string]int{}
			for _, args := range [][]string{
				{"-c", "8", "-n", "1500", "-conn", "close"},
				{"-c", "6", "-n", "1500", "-conn", "keepalive", "-reqs-per-conn", "10"},
			} {
				d, out := runLoadgen(t, append(args, "-attribute", "both", "-workers", "3", "http://"+addr+"/")...)
				want += d.Requests
				a := d.Attribution
				if d.Errors != 0 || a.Counts != "served" || a.ServingMissed != 0 || a.UnresolvedResponses != 0 || a.Acceptors == nil {
					t.Fatalf("%v: errors %d, attribution %+v\n%s", args, d.Errors, a, out)
				}
				if a.Disagreements != 0 || a.DisagreeingResponses != 0 {
					t.Errorf("%v: kernel and header disagree on %d connections, %d responses: %+v", args, a.Disagreements, a.DisagreeingResponses, a.Examples)
				}
				for pid := range d.PerPID {
					if !contains(f.Workers(), pid) {
						t.Errorf("%v: served by %s, not a worker %v", args, pid, f.Workers())
					}
				}
				primary := strconv.Itoa(f.Pid())
				accepted := keysOf(a.Acceptors.PerPID)
				if kind == peers.NodeRR {
					if len(accepted) != 1 || accepted[0] != primary || d.PerPID[primary] != nil {
						t.Errorf("%v: accepted by %v, served by %v: want the primary %s to accept all and serve none", args, accepted, keysOf(d.PerPID), primary)
					}
					if !strings.Contains(out, "Accepted by 1 process") {
						t.Errorf("%v: the summary does not say who accepted:\n%s", args, out)
					}
				} else {
					for _, h := range a.Handoffs {
						if h.AcceptorPID != h.ServerPID {
							t.Errorf("%v: %d connections accepted by %d, served by %d", args, h.Connections, h.AcceptorPID, h.ServerPID)
						}
					}
				}
				for pid, pc := range d.PerPID {
					kernel[pid] += int(pc.Requests)
				}
				t.Logf("%v: handoffs %+v", args, a.Handoffs)
			}
			// The log: every request of both runs, by the pid that served it.
			var logged map[string]int
			awaitLog(t, want, func() int64 { logged, _ = f.LogCounts(); return sum(logged) })
			if !maps.Equal(logged, kernel) {
				t.Errorf("requests per pid: %s's log %v, the kernel's serving attribution %v", kind, logged, kernel)
			}
		})
	}
}

func contains(pids []int, pid string) bool {
	for _, p := range pids {
		if strconv.Itoa(p) == pid {
			return true
		}
	}
	return false
}

// TestServingHookMissing: on a kernel without the serving tracepoint
// (made so by naming another), loadgen says so in one line and counts
// who accepted, and the JSON says which it counted.
func TestServingHookMissing(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	out := t.TempDir() + "/run.json"
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-json", out, "-attribute", "kernel", "-c", "2", "-n", "200", "http://"+tg.Addr+"/")
	cmd.Env = append(os.Environ(), "LBBENCH_KATTR_SERVE_HOOK=lbbench_no_such_tracepoint")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "sock_send_length") || !strings.Contains(lines[0], "counting who accepted each connection instead") {
		t.Errorf("stderr %q: want one line naming the missing hook and what is counted instead", b)
	}
	if d := readDoc(t, out); d.Attribution.Counts != "accepts" || d.Attribution.Acceptors != nil || d.Requests != 200 {
		t.Errorf("counts %q, acceptors %v, %d requests", d.Attribution.Counts, d.Attribution.Acceptors, d.Requests)
	}
}

// TestServingWithoutAcceptors: -acceptors=false counts who served with
// no accept program: in the single model, whose supervisor accepts every
// connection and hands it to a worker, the kernel's senders are the
// workers the X-Worker-Pid header names, response for response; the
// JSON and the summary say accepts were not traced, and nothing is
// counted as unresolved for want of an acceptor.
func TestServingWithoutAcceptors(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "single", "-workers", "3")
	for _, conn := range []string{"close", "keepalive"} {
		d, out := runLoadgen(t, "-attribute", "both", "-acceptors=false", "-workers", "3", "-c", "6", "-n", "900", "-conn", conn, "http://"+tg.Addr+"/")
		a := d.Attribution
		if d.Errors != 0 || d.Requests != 900 || a.Counts != "served" || !a.AcceptsUntraced || len(d.Problems) != 0 {
			t.Fatalf("%s: %d errors, %d requests, attribution %+v, problems %v\n%s", conn, d.Errors, d.Requests, a, d.Problems, out)
		}
		if a.Acceptors != nil || len(a.Handoffs) != 0 || a.Recorded != 0 || a.Unresolved != 0 || a.UnresolvedResponses != 0 {
			t.Errorf("%s: acceptors %v, handoffs %v, %d accepts recorded, %d connections and %d responses unresolved: want none", conn,
				a.Acceptors, a.Handoffs, a.Recorded, a.Unresolved, a.UnresolvedResponses)
		}
		if a.Disagreements != 0 || a.DisagreeingResponses != 0 || len(d.PerPID) != 3 {
			t.Errorf("%s: served by %v; kernel and header disagree on %d connections, %d responses", conn, keysOf(d.PerPID), a.Disagreements, a.DisagreeingResponses)
		}
		for pid, pc := range d.PerPID {
			if h := a.HeaderPerPID[pid]; h == nil || h.Requests != pc.Requests || h.Connections != pc.Connections {
				t.Errorf("%s: pid %s served %+v by the kernel, %+v by its header", conn, pid, pc, h)
			}
		}
		if !strings.Contains(out, "accepts not traced") || strings.Contains(out, "accepts recorded") {
			t.Errorf("%s: the summary does not say accepts were not traced:\n%s", conn, out)
		}
	}
}

// TestKernelAttributionMappedURL: a URL with an IPv4-mapped address
// ([::ffff:127.0.0.1]) reaches an IPv4 listener; the kernel names the
// connection unmapped, and every response is still attributed (it used
// to leave all of them unresolved, each after a 20 ms wait).
func TestKernelAttributionMappedURL(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	_, port, _ := strings.Cut(tg.Addr, ":")
	d, out := runLoadgen(t, "-attribute", "both", "-workers", "2", "-c", "2", "-n", "300", "-conn", "close", "http://[::ffff:127.0.0.1]:"+port+"/")
	a := d.Attribution
	if d.Requests != 300 || a.Unresolved != 0 || a.UnresolvedResponses != 0 || a.Disagreements != 0 || len(d.PerPID) != 2 {
		t.Errorf("%d requests, %d connections and %d responses unresolved, %d disagreements, served by %v\n%s",
			d.Requests, a.Unresolved, a.UnresolvedResponses, a.Disagreements, keysOf(d.PerPID), out)
	}
}

// TestAcceptorsFlagRefused: -acceptors=false without kernel attribution, and
// -acceptors=false on a kernel without the serving hook (nothing would
// be counted), each get one line and a non-zero status before any load.
func TestAcceptorsFlagRefused(t *testing.T) {
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-acceptors=false", "-n", "1", "http://127.0.0.1:1/")
	proctest.WantOneLine(t, cmd, 2, "-acceptors=false goes with -attribute kernel or both")
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
	cmd = exec.Command(proctest.Bin(t, "loadgen"), "-attribute", "kernel", "-acceptors=false", "-n", "10", "http://"+tg.Addr+"/")
	cmd.Env = append(os.Environ(), "LBBENCH_KATTR_SERVE_HOOK=lbbench_no_such_tracepoint")
	proctest.WantOneLine(t, cmd, 1, "-acceptors=false: serving attribution needs the sock_send_length tracepoint")
	for pid, n := range proctest.ByLabel(tg.Metrics(t)["lbbench_target_requests_total"], "pid") {
		if n != 0 {
			t.Errorf("a refused run sent load: worker %s served %v requests", pid, n)
		}
	}
}
