package main

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/udpwire"
)

// Hostile input on the UDP target: flags that mean nothing for datagrams
// are refused, and a sender no reply can reach costs only its own reply.

func TestUDPRefusesTCPFlags(t *testing.T) {
	bin := proctest.Bin(t, "target")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-work", "1ms"}, "-work is TCP's"},
		{[]string{"-mptcp"}, "-mptcp is TCP's"},
		{[]string{"-header-timeout", "1s"}, "-header-timeout is TCP's"},
		{[]string{"-model", "shared", "-accept", "exclusive"}, "-accept exclusive"},
		{[]string{"-model", "reuseport", "-accept", "exclusive"}, "use netpoll or blocking"},
	} {
		args := append([]string{"-proto", "udp", "-addr", "127.0.0.1:0", "-metrics-addr", "off"}, c.args...)
		proctest.WantOneLine(t, exec.Command(bin, args...), 2, c.want)
	}
}

// udpPacket is an IPv4+UDP datagram from 127.0.0.1:sport to 127.0.0.1:dport
// (UDP checksum 0: none, allowed over IPv4; the kernel fills the IP one).
func udpPacket(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:16], []byte{127, 0, 0, 1})
	copy(b[16:20], []byte{127, 0, 0, 1})
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// TestUDPSourcePortZero: a request from source port 0 queued ahead of 63
// good ones. The kernel cannot send to port 0 (EINVAL), which used to
// cost the whole batch: now that request alone goes unanswered, counted
// as bad_source, and /workers counts the datagrams each worker read.
func TestUDPSourcePortZero(t *testing.T) {
	raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Skipf("raw socket (needs CAP_NET_RAW): %v", err)
	}
	defer unix.Close(raw)
	tg := proctest.StartTarget(t, "-proto", "udp", "-model", "reuseport", "-workers", "1")
	_, portStr, _ := net.SplitHostPort(tg.Addr)
	port, _ := strconv.Atoi(portStr)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me := uint16(c.LocalAddr().(*net.UDPAddr).Port)

	var req [udpwire.RequestSize]byte
	to := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	pkts := [][]byte{udpPacket(0, uint16(port), udpwire.PutRequest(req[:], udpwire.Request{Flow: 1, ID: 0}))}
	for i := range 63 {
		pkts = append(pkts, udpPacket(me, uint16(port), udpwire.PutRequest(req[:], udpwire.Request{Flow: 2, ID: uint64(i)})))
	}
	// Sent back to back, so they wait in the target's queue together.
	for _, p := range pkts {
		if err := unix.Sendto(raw, p, 0, to); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint64]bool{}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(got) < 63 {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		if r, ok := udpwire.ParseReply(buf[:n]); ok && r.Flow == 2 {
			got[r.ID] = true
		}
	}
	if len(got) != 63 {
		t.Errorf("%d of the 63 good requests answered", len(got))
	}
	m := tg.Metrics(t)
	dir := proctest.ByLabel(m["lbbench_target_datagrams_total"], "direction")
	if dir["in"] != 64 || dir["out"] != 63 || dir["bad_source"] != 1 || dir["send_failed"] != 0 {
		t.Errorf("datagrams by direction %v: want in 64, out 63, bad_source 1, send_failed 0", dir)
	}

	resp, err := http.Get("http://" + tg.MetricsAddr + "/workers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ws struct {
		Workers []map[string]any `json:"workers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ws); err != nil {
		t.Fatal(err)
	}
	if len(ws.Workers) != 1 || ws.Workers[0]["datagrams"] != float64(64) || ws.Workers[0]["accepted"] != nil {
		t.Errorf("/workers %v: want one worker with datagrams 64 and no accepted", ws.Workers)
	}
}
