package netpath

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// A helper process for TestStaleTopologyCleaned: it builds a topology,
// says so, and waits to be killed.
func TestMain(m *testing.M) {
	if os.Getenv("LBB_NETPATH_HELPER") == "1" {
		t, err := Up(Options{Clients: 1, RSS: true, RFS: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("up", t.Target)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
}

func rfsNow(t *testing.T) string {
	b, err := os.ReadFile(rfsSysctl)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// leftBehind lists anything of ours: namespaces, management links.
func leftBehind() []string {
	out := Namespaces()
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "lbbm") {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	return out
}

// echo listens on the service port in the target namespace and answers
// each connection with the address it came from.
func echo(t *testing.T, top *Topology) (port int, stop func()) {
	t.Helper()
	var ln net.Listener
	if err := Do(top.Target, func() (err error) { ln, err = net.Listen("tcp", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, func() { ln.Close() }
}

func ask(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestPathCarriesTrafficAndLeavesNothing: every client namespace and the
// host reach the service address, from their own addresses; the
// steering is written; Down leaves no namespace, link or changed sysctl.
func TestPathCarriesTrafficAndLeavesNothing(t *testing.T) {
	needRoot(t)
	rfsBefore := rfsNow(t)
	top, err := Up(Options{Clients: 3, RSS: true, RFS: true, XPS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Down()
	port, stop := echo(t, top)
	defer stop()
	svc := net.JoinHostPort(top.Service.String(), strconv.Itoa(port))
	for _, c := range top.Clients {
		var got string
		if err := Do(c.NS, func() (err error) { got, err = ask(svc); return err }); err != nil {
			t.Fatalf("from %s: %v", c.NS, err)
		}
		if got != c.Addr.String() {
			t.Errorf("from %s the target saw %s, want %v", c.NS, got, c.Addr)
		}
	}
	if got, err := ask(svc); err != nil || got != mgmtHost.Addr().String() {
		t.Errorf("from the host: %q, %v", got, err)
	}
	rps, err := ReadSysfs(top.Target, "/sys/class/net/lbbt0/queues/rx-0/rps_cpus")
	if err != nil || strings.Trim(rps, "0,") != strings.Trim(cpuMask(numCPU()), "0,") {
		t.Errorf("rps_cpus %q (%v), want %s", rps, err, cpuMask(numCPU()))
	}
	if got := rfsNow(t); got != strconv.Itoa(rfsEntries) {
		t.Errorf("rps_sock_flow_entries %s while up, want %d", got, rfsEntries)
	}
	if !strings.Contains(top.Describe(), "RSS true, RFS true, XPS true") {
		t.Errorf("describe: %s", top.Describe())
	}
	if err := top.Down(); err != nil {
		t.Fatal(err)
	}
	if left := leftBehind(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if got := rfsNow(t); got != rfsBefore {
		t.Errorf("rps_sock_flow_entries %s after Down, was %s", got, rfsBefore)
	}
}

// TestFailedUpLeavesNothing: a build that fails half-way (a namespace
// of the name it wants already exists) takes down what it built.
func TestFailedUpLeavesNothing(t *testing.T) {
	needRoot(t)
	clash := nsPrefix + strconv.Itoa(os.Getpid()) + "-c1"
	if _, err := newNamed(clash); err != nil {
		t.Fatal(err)
	}
	_, err := Up(Options{Clients: 2, RSS: true})
	if err == nil {
		t.Fatal("Up succeeded over an existing namespace")
	}
	if left := leftBehind(); len(left) > 0 {
		t.Errorf("left behind after a failed Up: %v", left)
		removeNamespaces(nsPrefix + strconv.Itoa(os.Getpid()) + "-")
	}
	for _, o := range []Options{{Clients: 500}, {Clients: 1, RFS: true}} {
		if _, err := Up(o); err == nil {
			t.Errorf("Up(%+v) succeeded", o)
		}
	}
}

// TestStaleTopologyCleaned: a run killed with SIGKILL leaves its
// topology; the next Up (CleanStale) removes it and restores the sysctl.
func TestStaleTopologyCleaned(t *testing.T) {
	needRoot(t)
	rfsBefore := rfsNow(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LBB_NETPATH_HELPER=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "up ") {
		cmd.Process.Kill()
		t.Fatalf("helper: %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	left := leftBehind()
	if len(left) == 0 {
		t.Fatal("the killed run left nothing to clean (the test proves nothing)")
	}
	removed, err := CleanStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, nsPrefix+strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("removed %v, want the killed run's", removed)
	}
	if left := leftBehind(); len(left) > 0 {
		t.Errorf("still there: %v", left)
	}
	if got := rfsNow(t); got != rfsBefore {
		t.Errorf("rps_sock_flow_entries %s, was %s before the killed run", got, rfsBefore)
	}
}

func numCPU() int { return runtime.NumCPU() }
