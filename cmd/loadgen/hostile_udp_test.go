package main

import (
	"encoding/binary"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/udpwire"
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

// stampServer answers every request at once, but echoes stamp instead of
// the one it was sent.
func stampServer(t *testing.T, stamp uint64) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if _, ok := udpwire.ParseRequest(buf[:n]); !ok {
				continue
			}
			r := udpwire.AnswerInPlace(buf[:n], 4242, 0)
			binary.BigEndian.PutUint64(r[20:], stamp)
			c.WriteToUDP(r, from)
		}
	}()
	return "udp://" + c.LocalAddr().String()
}

// TestUDPLatencyIgnoresEchoedStamp: latency counts from loadgen's own
// send time. A server echoing a stamp of 0 made every reply look as old
// as the run, and a stamp from the future counted every reply lost.
func TestUDPLatencyIgnoresEchoedStamp(t *testing.T) {
	for _, stamp := range []uint64{0, 1 << 62} {
		d, _ := runLoadgen(t, "-flows", "2", "-rate", "2000", "-warmup", "100ms", "-d", "300ms", stampServer(t, stamp))
		if u := d.UDP; u == nil || u.Lost != 0 || u.Received != u.Sent || u.Sent < 500 {
			t.Errorf("stamp %d: udp %+v", stamp, d.UDP)
		}
		if p50 := d.Latency.P50; p50 <= 0 || p50 > 0.05 {
			t.Errorf("stamp %d: p50 %vs for an echo on loopback", stamp, p50)
		}
	}
}

// TestUDPStopsOnSignalAtTopRate: the highest rate allowed, on one flow,
// still leaves the send loop to see SIGTERM: it exits soon, with its
// JSON written.
func TestUDPStopsOnSignalAtTopRate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-json", out, "-q", "-flows", "1", "-rate", "1e7", "-d", "30s", stampServer(t, 0))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("loadgen at -rate 1e7 still running 5s after SIGTERM")
	}
	if d := readDoc(t, out); d.UDP == nil || d.UDP.Sent == 0 {
		t.Errorf("after SIGTERM: udp %+v", d.UDP)
	}
}
