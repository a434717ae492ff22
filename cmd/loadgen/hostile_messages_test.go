package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lbbench/lbbench/internal/proctest"
)

// -netns names something that is not a network namespace: say so, exit 2
// (it used to say "no such network namespace" or setns's "invalid
// argument", exit 1).
func TestNetNSNotANetworkNamespace(t *testing.T) {
	for _, p := range []string{"/proc/1/ns/mnt", "/proc/self/ns/uts", "/etc/passwd"} {
		cmd := exec.Command(proctest.Bin(t, "loadgen"), "-n", "1", "-netns", p, "http://127.0.0.1:1/")
		proctest.WantOneLine(t, cmd, 2, "-netns "+p+": "+p+" is not a network namespace")
	}
}

// Without privilege the BPF error says root is needed and does not pass
// on cilium/ebpf's "consider rlimit.RemoveMemlock" (advice for library
// users).
func TestKernelAttributionWithoutRoot(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv to drop to nobody")
	}
	tg := proctest.StartTarget(t, "-model", "shared", "-workers", "1")
	// The test binaries sit in a 0700 folder: nobody needs a copy.
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
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin,
		"-attribute", "kernel", "-n", "10", "http://"+tg.Addr+"/")
	code, stderr := proctest.RunStatus(t, cmd)
	if code == 0 || strings.Contains(stderr, "\n") || !strings.Contains(stderr, "needs root") || strings.Contains(stderr, "RemoveMemlock") {
		t.Fatalf("status %d, stderr %q: want non-zero and one line saying root is needed, no RemoveMemlock advice", code, stderr)
	}
}

// -attribute kernel with nothing listening on this host: the kernel
// sees only this host's servers, and a server in another namespace
// needs -netns; the message says so.
func TestKernelAttributionPointsToNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel attribution needs root")
	}
	port := proctest.FreePort(t)
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-attribute", "kernel", "-n", "1", "http://127.0.0.1:"+strconv.Itoa(port)+"/")
	proctest.WantOneLine(t, cmd, 1, "give -netns")
}
