package main

import (
	"math"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/fairness"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/proctest"
)

func udpURL(tg *proctest.Target) string { return "udp://" + tg.Addr }

// TestUDPCountsMatchTarget: below loss, what each worker says it
// answered equals, datagram for datagram, what loadgen attributes to
// its pid, in every UDP model.
func TestUDPCountsMatchTarget(t *testing.T) {
	for _, args := range [][]string{
		{"-model", "reuseport"},
		{"-model", "shared", "-accept", "netpoll"},
		{"-model", "shared", "-accept", "blocking"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			tg := proctest.StartTarget(t, append(args, "-proto", "udp", "-workers", "3")...)
			d, _ := runLoadgen(t, "-flows", "24", "-rate", "4000", "-d", "2s", "-workers", "3", udpURL(tg))
			u := d.UDP
			if u == nil || u.Lost != 0 || u.Sent != d.Requests || u.Duplicates != 0 || u.Malformed != 0 {
				t.Fatalf("udp %+v, %d replies", u, d.Requests)
			}
			out := proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_datagrams_total"], "pid", "direction", "out")
			for pid, n := range out {
				if pc := d.PerPID[pid]; (pc == nil && n > 0) || (pc != nil && float64(pc.Requests) != n) {
					t.Errorf("pid %s: the worker answered %v, loadgen attributes %+v", pid, n, pc)
				}
			}
			if len(d.PerPID) < 2 {
				t.Errorf("24 flows on 3 workers reached %d worker(s)", len(d.PerPID))
			}
		})
	}
}

// TestUDPLossReportedAlike: a receive buffer too small for the rate
// loses datagrams; loadgen's count of them equals the target socket's
// drops (sock_diag) plus the replies it could not send, and the host's
// UdpRcvbufErrors grew by the socket's drops.
func TestUDPLossReportedAlike(t *testing.T) {
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "1", "-rcvbuf", "4096", "-sleep", "0s")
	before, err := kernel.TcpExt()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := runLoadgen(t, "-flows", "16", "-rate", "150000", "-d", "1s", udpURL(tg))
	after, _ := kernel.TcpExt()
	m := tg.Metrics(t)
	drops := sum1(proctest.ByLabel(m["lbbench_target_socket_drops_total"], "socket"))
	sendFailed := sum1(proctest.ByLabelWhere(m["lbbench_target_datagrams_total"], "pid", "direction", "send_failed"))
	u := d.UDP
	if u.Lost == 0 {
		t.Skipf("no loss at %d datagrams/s on this machine (a 4 KiB buffer held up): nothing to compare", u.Sent)
	}
	if float64(u.Lost) != drops+sendFailed {
		t.Errorf("loadgen lost %d; the target's socket dropped %v and could not send %v", u.Lost, drops, sendFailed)
	}
	if rcvbuf := float64(after["UdpRcvbufErrors"] - before["UdpRcvbufErrors"]); rcvbuf != drops {
		t.Errorf("host UdpRcvbufErrors +%v, the target's socket dropped %v", rcvbuf, drops)
	}
	if d.Errors < u.Lost {
		t.Errorf("%d errors, %d lost: the loss must count as errors", d.Errors, u.Lost)
	}
}

func sum1(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// TestFlowSteeringSurvivesRebinding: with -steer bpf-flow every datagram
// of a flow reaches the flow's first worker although its source port
// changes every 200ms; with the kernel's hash it does not.
func TestFlowSteeringSurvivesRebinding(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		steer string
		keeps bool
	}{{"bpf-flow", true}, {"hash", false}} {
		t.Run(c.steer, func(t *testing.T) {
			tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "3", "-steer", c.steer)
			d, _ := runLoadgen(t, "-flows", "12", "-rate", "3000", "-d", "2s", "-rebind-every", "200ms", "-workers", "3", udpURL(tg))
			u := d.UDP
			if u.Rebinds < 12*5 || u.Lost != 0 {
				t.Fatalf("udp %+v: want rebinds and no loss", u)
			}
			if c.keeps && (u.FirstWorkerShare != 1 || u.FlowsMultiWorker != 0) {
				t.Errorf("bpf-flow: %.4f of replies from the flow's first worker, %d flows on several workers; want 1 and 0", u.FirstWorkerShare, u.FlowsMultiWorker)
			}
			if !c.keeps && (u.FirstWorkerShare > 0.9 || u.FlowsMultiWorker == 0) {
				t.Errorf("hash: %.4f from the first worker, %d flows moved; rebinding should move most flows", u.FirstWorkerShare, u.FlowsMultiWorker)
			}
		})
	}
}

// TestFlowImbalanceMatchesBallsIntoBins: F = N = 2 flows on 2 workers,
// over repeated runs (new source ports each time), the mean measured
// max/mean is what uniform hashing predicts (1.5), within 4 standard
// errors.
func TestFlowImbalanceMatchesBallsIntoBins(t *testing.T) {
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "2")
	const runs = 24
	var sum float64
	for range runs {
		d, _ := runLoadgen(t, "-q", "-flows", "2", "-rate", "400", "-d", "300ms", "-workers", "2", udpURL(tg))
		sum += d.Fairness.Requests.MaxOverMean
	}
	want, sd := fairness.BallsIntoBins(2, 2, 100000)
	got := sum / runs
	if se := sd / math.Sqrt(runs); math.Abs(got-want) > 4*se {
		t.Errorf("mean max/mean over %d runs %.3f, uniform hashing gives %.3f ± %.3f (one standard error)", runs, got, want, se)
	}
}

// TestUDPBadInput: usage errors get one line and status 2; a malformed
// datagram is counted and dropped, and the target keeps serving.
func TestUDPBadInput(t *testing.T) {
	for _, c := range []struct {
		bin  string
		args []string
		want string
	}{
		{"loadgen", []string{"-conn", "close", "-d", "1s", "udp://127.0.0.1:9/"}, "-conn and -reqs-per-conn are TCP's"},
		{"loadgen", []string{"-c", "5", "-d", "1s", "udp://127.0.0.1:9/"}, "-c is TCP's"},
		{"loadgen", []string{"-flows", "0", "-d", "1s", "udp://127.0.0.1:9/"}, "-flows 0"},
		{"loadgen", []string{"-flows", "90000", "-d", "1s", "udp://127.0.0.1:9/"}, "more than the ephemeral ports"},
		{"loadgen", []string{"-flows", "4", "-d", "1s", "http://127.0.0.1:9/"}, "-flows goes with -proto udp"},
		{"loadgen", []string{"-proto", "udp", "-d", "1s", "http://127.0.0.1:9/"}, "-proto udp wants udp://HOST:PORT"},
		{"target", []string{"-proto", "udp", "-model", "single"}, "a datagram has none"},
		{"target", []string{"-proto", "udp", "-steer", "bpf-least"}, "datagrams have none"},
		{"target", []string{"-steer", "bpf-flow"}, "it goes with -proto udp"},
		{"target", []string{"-proto", "sctp"}, `invalid value "sctp" for flag -proto: want tcp or udp`},
	} {
		proctest.WantOneLine(t, exec.Command(proctest.Bin(t, c.bin), c.args...), 2, c.want)
	}

	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "1")
	c, err := net.Dial("udp", tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"", "x", "LBQ1", strings.Repeat("garbage!", 10)} {
		c.Write([]byte(junk))
	}
	c.Close()
	var malformed float64
	for deadline := time.Now().Add(2 * time.Second); malformed < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		malformed = sum1(proctest.ByLabelWhere(tg.Metrics(t)["lbbench_target_datagrams_total"], "pid", "direction", "malformed"))
	}
	if malformed < 3 {
		t.Errorf("%v malformed datagrams counted, want at least 3 (an empty one may not count)", malformed)
	}
	d, _ := runLoadgen(t, "-flows", "4", "-n", "100", udpURL(tg))
	if d.Requests != 100 {
		t.Errorf("after junk, %d of 100 requests answered", d.Requests)
	}
}

// TestUDPRateTooHigh: a rate the machine cannot send is flagged by the
// self-check, not passed off as the target's answer.
func TestUDPRateTooHigh(t *testing.T) {
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "1")
	d, out := runLoadgen(t, "-flows", "4", "-rate", "5000000", "-d", "1s", udpURL(tg))
	if !d.SelfCheck.Bottleneck || !strings.Contains(out, "loadgen may be the bottleneck") {
		t.Errorf("5M datagrams/s asked, %d sent: self-check %+v", d.UDP.Sent, d.SelfCheck)
	}
}
