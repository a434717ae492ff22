package main

import (
	"cmp"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/rundoc"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel attribution needs root (CI runs as root)")
	}
}

// TestKernelMatchesHeader: attributed by the kernel, every response
// goes to the process the target's own header names, in every model;
// the acceptors are the workers themselves, but in single, whose
// supervisor accepts everything and hands it over, and the summary says
// so in one line.
func TestKernelMatchesHeader(t *testing.T) {
	needRoot(t)
	for _, model := range []string{"reuseport", "shared", "single"} {
		t.Run(model, func(t *testing.T) {
			tg := proctest.StartTarget(t, "-model", model, "-workers", "3")
			for _, args := range [][]string{
				{"-c", "8", "-n", "3000", "-conn", "close"},
				{"-c", "6", "-n", "3000", "-conn", "keepalive", "-reqs-per-conn", "10"},
			} {
				d, out := runLoadgen(t, append(args, "-attribute", "both", "-workers", "3", "http://"+tg.Addr+"/")...)
				a := d.Attribution
				if d.Errors != 0 || a.Missed != 0 || a.Unresolved != 0 || a.Recorded < d.Connections ||
					a.Counts != "served" || a.ServingMissed != 0 || a.UnresolvedResponses != 0 || a.Acceptors == nil {
					t.Fatalf("%v: errors %d, attribution %+v", args, d.Errors, a)
				}
				handed := int64(0)
				for _, h := range a.Handoffs {
					if h.AcceptorPID != h.ServerPID {
						handed += h.Connections
					}
				}
				if model == "single" {
					sup := strconv.Itoa(tg.Cmd.Process.Pid)
					if len(a.Acceptors.PerPID) != 1 || a.Acceptors.PerPID[sup] == nil || a.Acceptors.PerPID[sup].Connections != d.Connections {
						t.Errorf("%v: acceptors %v, want every connection on the supervisor %s", args, keysOf(a.Acceptors.PerPID), sup)
					}
					if d.PerPID[sup] != nil || handed != d.Connections || !strings.Contains(out, "Accepted by 1 process (") || !strings.Contains(out, "served by 3 processes") {
						t.Errorf("%v: the supervisor's handoffs not reported plainly: per_pid %v, handoffs %+v\n%s", args, keysOf(d.PerPID), a.Handoffs, out)
					}
				} else {
					for pid, pc := range d.PerPID {
						if ac := a.Acceptors.PerPID[pid]; ac == nil || ac.Connections != pc.Connections {
							t.Errorf("%v pid %s: served %+v, accepted %+v", args, pid, pc, ac)
						}
					}
					if handed != 0 || !strings.Contains(out, "Every connection was served by the process that accepted it") {
						t.Errorf("%v: %d connections handed over: %+v", args, handed, a.Handoffs)
					}
					if len(d.PerTID) != 3 {
						t.Errorf("%v: %d serving threads, want one per worker (the lean path's event loops)", args, len(d.PerTID))
					}
				}
				if a.Disagreements != 0 {
					t.Errorf("%v: %d connections where kernel and header disagree: %+v", args, a.Disagreements, a.Examples)
				}
				if len(d.PerPID) != 3 {
					t.Errorf("%v: served by %v, want the 3 workers", args, keysOf(d.PerPID))
				}
				for pid, pc := range d.PerPID {
					h := a.HeaderPerPID[pid]
					if h == nil || h.Requests != pc.Requests || h.Connections != pc.Connections {
						t.Errorf("%v pid %s: kernel %+v, header %+v", args, pid, pc, h)
					}
				}
			}
		})
	}
}

// TestKernelMatchesGoHTTP: plain Go net/http processes (Go's own accept
// path, from whichever thread the runtime runs it on) are attributed by
// the kernel to the process whose header answered, every connection.
func TestKernelMatchesGoHTTP(t *testing.T) {
	needRoot(t)
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	g, err := peers.StartGoHTTP(peers.GoHTTPOptions{Bin: proctest.Bin(t, "gohttp"), Addr: addr, Procs: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	for _, args := range [][]string{
		{"-c", "32", "-n", "4000", "-conn", "close"},
		{"-c", "32", "-n", "4000", "-conn", "keepalive", "-reqs-per-conn", "10"},
	} {
		d, _ := runLoadgen(t, append(args, "-attribute", "both", "-workers", "3", "http://"+addr+"/")...)
		a := d.Attribution
		if d.Errors != 0 || a.Missed != 0 || a.Unresolved != 0 || a.Disagreements != 0 {
			t.Fatalf("%v: errors %d, attribution %+v", args, d.Errors, a)
		}
		if len(d.PerPID) != 3 {
			t.Errorf("%v: kernel names pids %v, want the 3 processes %v", args, keysOf(d.PerPID), g.Workers())
		}
	}
}

// TestKernelMatchesNginxLog: for nginx, which sends no worker header,
// the kernel's per-pid counts equal nginx's own access log, keep-alive
// and close, one connection at a time and 64 at once.
func TestKernelMatchesNginxLog(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"close sequential", []string{"-c", "1", "-n", "500", "-conn", "close"}},
		{"close 64", []string{"-c", "64", "-n", "5000", "-conn", "close"}},
		{"keepalive sequential", []string{"-c", "1", "-n", "500", "-reqs-per-conn", "25"}},
		{"keepalive 64", []string{"-c", "64", "-n", "5000", "-reqs-per-conn", "20"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
			ng, err := peers.StartNginx(peers.NginxOptions{Addr: addr, Workers: 2, ReusePort: true, AccessLog: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ng.Stop()
			d, _ := runLoadgen(t, append(c.args, "-attribute", "kernel", "-pid-header", "X-None", "http://"+addr+"/")...)
			awaitLog(t, d.Requests, func() int64 { r, _, _ := ng.LogCounts(); return sum(r) })
			reqs, conns, err := ng.LogCounts()
			if err != nil {
				t.Fatal(err)
			}
			if d.Errors != 0 || d.Attribution.Missed != 0 || d.Attribution.Unresolved != 0 {
				t.Fatalf("errors %d, attribution %+v", d.Errors, d.Attribution)
			}
			compareToLog(t, d, reqs, conns)
		})
	}
}

func compareToLog(t *testing.T, d *rundoc.Doc, reqs, conns map[string]int) {
	t.Helper()
	if len(reqs) != len(d.PerPID) {
		t.Errorf("nginx log names pids %v, kernel %v", reqs, keysOf(d.PerPID))
	}
	for pid, n := range reqs {
		pc := d.PerPID[pid]
		if pc == nil || pc.Requests != int64(n) || pc.Connections != int64(conns[pid]) {
			t.Errorf("pid %s: nginx log %d requests %d connections; kernel %+v", pid, n, conns[pid], pc)
		}
	}
}

// TestKernelMatchesHAProxy: for HAProxy's threads, the kernel's count
// of requests each thread served equals HAProxy's log of %[thread], and
// its count of connections each accepted equals HAProxy's own (show
// activity): with a socket per thread (shards by-thread), with one
// shared socket and multi-queue accept off, and with it on (HAProxy's
// default), where a thread hands some of what it accepts to others.
func TestKernelMatchesHAProxy(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name   string
		o      peers.HAProxyOptions
		serves bool // the accepting thread serves
	}{
		{"shards", peers.HAProxyOptions{Shards: true}, true},
		{"shared single-queue", peers.HAProxyOptions{SingleQueue: true}, true},
		{"shared multi-queue", peers.HAProxyOptions{}, false},
	} {
		for _, args := range [][]string{
			{"-c", "64", "-n", "5000", "-conn", "close"},
			{"-c", "64", "-n", "5000", "-conn", "keepalive", "-reqs-per-conn", "20"},
		} {
			t.Run(c.name+"/"+args[5], func(t *testing.T) {
				addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
				c.o.Addr, c.o.Threads, c.o.Log = addr, 3, true
				hp, err := peers.StartHAProxy(c.o)
				if err != nil {
					t.Fatal(err)
				}
				defer hp.Stop()
				stats, err := hp.Stats()
				if err != nil {
					t.Fatal(err)
				}
				defer stats.Close()
				before, err := stats.Activity()
				if err != nil {
					t.Fatal(err)
				}
				d, _ := runLoadgen(t, append(args, "-attribute", "kernel", "-fair-by", "thread", "-workers", "3", "http://"+addr+"/")...)
				awaitLog(t, d.Requests, func() int64 { r, _ := stats.ThreadRequests(); return sum(r) })
				after, err := stats.Activity()
				if err != nil {
					t.Fatal(err)
				}
				reqs, err := stats.ThreadRequests()
				if err != nil {
					t.Fatal(err)
				}
				if d.Errors != 0 || d.Attribution.Missed != 0 || d.Attribution.Unresolved != 0 {
					t.Fatalf("errors %d, attribution %+v", d.Errors, d.Attribution)
				}
				a := d.Attribution
				if a.Counts != "served" || a.ServingMissed != 0 || a.UnresolvedResponses != 0 || a.Acceptors == nil {
					t.Fatalf("serving attribution %+v", a)
				}
				// HAProxy numbers its threads in the order it starts them,
				// the first being the process's own: the kernel's thread
				// ids in ascending order.
				tidSet := maps.Clone(d.PerTID)
				maps.Copy(tidSet, a.Acceptors.PerTID)
				tids := slices.SortedFunc(maps.Keys(tidSet), func(a, b string) int { return cmp.Compare(atoi(a), atoi(b)) })
				if len(tids) != 3 {
					t.Fatalf("threads %v, want HAProxy's 3", tids)
				}
				var kConns, kReqs, hConns, hReqs []int64
				for i, tid := range tids {
					if tc := tidSet[tid]; tc.PID != uint64(hp.Pid()) {
						t.Errorf("thread %s belongs to pid %d, not HAProxy's %d", tid, tc.PID, hp.Pid())
					}
					var served, accepted int64
					if tc := d.PerTID[tid]; tc != nil {
						served = tc.Requests
					}
					if tc := a.Acceptors.PerTID[tid]; tc != nil {
						accepted = tc.Connections
					}
					kConns, kReqs = append(kConns, accepted), append(kReqs, served)
					hConns = append(hConns, after["accepted"][i]-before["accepted"][i])
					hReqs = append(hReqs, int64(reqs[i]))
				}
				if !slices.Equal(kConns, hConns) {
					t.Errorf("connections accepted per thread: kernel %v, HAProxy %v (tids %v)", kConns, hConns, tids)
				}
				if !slices.Equal(kReqs, hReqs) {
					t.Errorf("requests served per thread: kernel %v, HAProxy's log %v (tids %v)", kReqs, hReqs, tids)
				}
				if handed := a.HandedToThread; c.serves && handed != 0 || !c.serves && args[5] == "close" && handed == 0 {
					t.Errorf("%d connections served by another thread than their acceptor (HAProxy hands over: %v)", handed, !c.serves)
				}
				t.Logf("per thread: accepted %v, served %v requests; %d connections handed to another thread", kConns, kReqs, a.HandedToThread)
			})
		}
	}
}

// awaitLog waits, up to 3 s, until a server's log holds want requests:
// servers write the line after the response.
func awaitLog(t *testing.T, want int64, logged func() int64) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); logged() < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

func sum[K comparable](m map[K]int) int64 {
	var n int64
	for _, v := range m {
		n += int64(v)
	}
	return n
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestFairByWorker: in-process workers share a pid; -fair-by worker
// counts them by the id each sends, and the fairness figures are theirs.
func TestFairByWorker(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-inproc", "-workers", "3")
	d, _ := runLoadgen(t, "-c", "8", "-n", "3000", "-conn", "close", "-fair-by", "worker", "-workers", "3", "http://"+tg.Addr+"/")
	if len(d.PerPID) != 1 || len(d.PerWorker) != 3 {
		t.Fatalf("per_pid %v, per_worker %v: want one pid and three workers", keysOf(d.PerPID), d.PerWorker)
	}
	var sum int64
	for _, pc := range d.PerWorker {
		sum += pc.Requests
	}
	if sum != d.Requests || d.Attribution.FairBy != "worker" || d.Fairness.Requests.Jain < 0.5 {
		t.Errorf("per-worker sum %d of %d requests, fairness by %q, Jain %v", sum, d.Requests, d.Attribution.FairBy, d.Fairness.Requests.Jain)
	}
}

// TestKernelAttributionBadInput: what kernel attribution cannot do gets
// one line and a non-zero status, and no BPF program of ours outlives
// loadgen, even killed with SIGKILL.
func TestKernelAttributionBadInput(t *testing.T) {
	needRoot(t)
	free := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"nobody listens", []string{"-attribute", "kernel", "-d", "1s", "http://" + free + "/"}, 1, "nothing listens on " + free},
		{"not this host", []string{"-attribute", "kernel", "-d", "1s", "http://198.18.0.1:80/"}, 1, "the kernel sees only this host's servers"},
		{"threads need the kernel", []string{"-fair-by", "thread", "-d", "1s", "http://" + free + "/"}, 2, "-fair-by thread needs -attribute kernel or both"},
		{"worker ids are a header", []string{"-fair-by", "worker", "-attribute", "kernel", "-d", "1s", "http://" + free + "/"}, 2, "-fair-by worker counts the server's -id-header"},
		{"unknown mode", []string{"-attribute", "ebpf", "-d", "1s", "http://" + free + "/"}, 2, `invalid value "ebpf" for flag -attribute: want header, kernel or both`},
	} {
		t.Run(c.name, func(t *testing.T) {
			proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "loadgen"), c.args...), c.code, c.want)
		})
	}

	t.Run("no privilege", func(t *testing.T) {
		// A copy nobody may run, as nobody.
		dir, err := os.MkdirTemp("", "lbbench-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		b, err := os.ReadFile(proctest.Bin(t, "loadgen"))
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "loadgen")
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
		cmd := exec.Command(bin, "-attribute", "kernel", "-d", "1s", "http://"+tg.Addr+"/")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		code, out := proctest.RunStatus(t, cmd)
		if code != 1 || !strings.Contains(out, "needs root") || strings.Contains(out, "\n") {
			t.Errorf("as nobody: status %d, stderr %q; want 1 and one line saying it needs root", code, out)
		}
	})

	t.Run("SIGKILL leaves no program", func(t *testing.T) {
		tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "1")
		cmd := exec.Command(proctest.Bin(t, "loadgen"), "-attribute", "kernel", "-c", "2", "-d", "30s", "http://"+tg.Addr+"/")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); ourPrograms(t) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("loadgen never loaded its program")
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		for deadline := time.Now().Add(3 * time.Second); ourPrograms(t) > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d BPF program(s) of ours still loaded 3s after loadgen was killed", ourPrograms(t))
			}
		}
	})
}

// ourPrograms counts the loaded BPF programs named as kattr names its.
func ourPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := p.Info(); err == nil && info.Name == "lbb_accept" {
			n++
		}
		p.Close()
	}
}
