package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/proctest"
)

// Hostile input on loadgen -proto udp: what TCP refuses, UDP refuses
// too, with one line and status 2, before any socket is opened; and a
// loss is put where it happened.

func TestUDPUsageErrors(t *testing.T) {
	bin := proctest.Bin(t, "loadgen")
	url := "udp://127.0.0.1:9" // nothing is sent: every case fails first
	cases := []struct {
		args []string
		want string
	}{
		// A period that rounded to 0 ns used to spin forever, deaf to signals.
		{[]string{"-flows", "2", "-rate", "1e12", "-d", "200ms", url}, "-rate 1e+12: at most"},
		{[]string{"-flows", "1", "-rate", "1.5e9", "-d", "200ms", url}, "at most 10000000"},
		{[]string{"-rate", "-5", "-d", "200ms", url}, "must not be negative"},
		{[]string{"-warmup", "-1s", "-d", "200ms", url}, "must not be negative"},
		{[]string{"-timeout", "-1s", "-d", "200ms", url}, "must not be negative"},
		{[]string{"-fair-by", "thread", "-d", "200ms", url}, "-fair-by thread"},
		{[]string{"-d", "200ms", "udp://127.0.0.1"}, "udp://HOST:PORT"},
		{[]string{"-rebind-every", "1ns", "-d", "200ms", url}, "-rebind-every 1ns: at least 10ms"},
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 27000 {
		// Under the ephemeral-port bound, over the descriptors: it used
		// to open what it could and report the flows it asked for.
		n := strconv.Itoa(int(lim.Cur) + 1)
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"-flows", n, "-d", "200ms", url}, "-flows " + n + ": needs about"})
	}
	for _, c := range cases {
		proctest.WantOneLine(t, exec.Command(bin, c.args...), 2, c.want)
	}
}

// TestUDPLossAtLoadgenSocket: one flow with 100000 datagrams in flight
// overflows both the target's socket and loadgen's own. The JSON says
// which dropped what: the target's part equals the target's own socket
// drops, both parts together the host's UdpRcvbufErrors, and the
// self-check does not call such a run ok.
func TestUDPLossAtLoadgenSocket(t *testing.T) {
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "1")
	before, err := kernel.TcpExt()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "run.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-json", out, "-q", "-flows", "1", "-window", "100000", "-d", "300ms", "udp://"+tg.Addr)
	start := time.Now()
	if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
		t.Fatalf("loadgen: status %d: %s", code, stderr)
	}
	after, _ := kernel.TcpExt()
	d := readDoc(t, out)
	u := d.UDP
	if u == nil {
		t.Fatal("no udp section")
	}
	if u.LoadgenSocketDrops == 0 {
		t.Skipf("loadgen's socket dropped nothing in %v (%d lost): nothing to place", time.Since(start), u.Lost)
	}
	drops := sum1(proctest.ByLabel(tg.Metrics(t)["lbbench_target_socket_drops_total"], "socket"))
	if !u.TargetSocketSeen || float64(u.TargetSocketDrops) != drops {
		t.Errorf("target socket drops %d (seen %v); the target's metrics say %v", u.TargetSocketDrops, u.TargetSocketSeen, drops)
	}
	if host := int64(after["UdpRcvbufErrors"] - before["UdpRcvbufErrors"]); host != u.LoadgenSocketDrops+u.TargetSocketDrops {
		t.Errorf("host UdpRcvbufErrors +%d; loadgen's sockets %d + the target's %d", host, u.LoadgenSocketDrops, u.TargetSocketDrops)
	}
	if u.LoadgenSocketDrops+u.TargetSocketDrops+u.LostInBetween != u.Lost {
		t.Errorf("lost %d, placed %d + %d + %d", u.Lost, u.LoadgenSocketDrops, u.TargetSocketDrops, u.LostInBetween)
	}
	if !d.SelfCheck.Bottleneck {
		t.Errorf("self-check ok although loadgen dropped %d replies", u.LoadgenSocketDrops)
	}
}
