package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/proctest"
)

// TestHostileMatrixFlags: bad invocations are usage errors (exit 2, one
// line) that leave no results folder behind, and an old run's folder is
// never mixed with a new run's samples.
func TestHostileMatrixFlags(t *testing.T) {
	bin, benchBin := buildAll(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"extraarg"}, `unexpected argument "extraarg"`},
		{[]string{"-rfs"}, "-rfs and -xps steer the netns path"},
		{[]string{"-xps"}, "-rfs and -xps steer the netns path"},
		{[]string{"-src", "garbage"}, "-src garbage"},
		{[]string{"-scenarios", "tls", "-models", "reuseport,gohttp"}, "model gohttp: the suite cannot make it terminate TLS"},
	} {
		dir := filepath.Join(t.TempDir(), "res")
		cmd := exec.Command(benchBin, append([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "100ms"}, c.args...)...)
		proctest.WantOneLine(t, cmd, 2, c.want)
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%v: the results folder was created", c.args)
		}
	}

	// A folder with an old run in it is refused and left as it was.
	dir := t.TempDir()
	old := []byte("BenchmarkOld 1 1 req/s\n")
	os.WriteFile(filepath.Join(dir, "raw.txt"), old, 0o644)
	proctest.WantOneLine(t, exec.Command(benchBin, "matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "100ms"), 2, "is not empty")
	if b, _ := os.ReadFile(filepath.Join(dir, "raw.txt")); !bytes.Equal(b, old) {
		t.Errorf("raw.txt of the old run changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "json")); err == nil {
		t.Error("json/ was created in the refused folder")
	}
}

// TestNetnsNeedsRootBeforeFolder: a non-root -net netns run fails before
// it creates its results folder. The test runs bench as nobody.
func TestNetnsNeedsRootBeforeFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs bench as another user: root")
	}
	_, benchBin := buildAll(t)
	top, err := os.MkdirTemp("", "lbbench-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	os.Chmod(top, 0o777) // nobody could create the folder: only the check stops it
	bin := filepath.Join(top, "bin")
	os.Mkdir(bin, 0o755)
	b, _ := os.ReadFile(benchBin)
	os.WriteFile(filepath.Join(bin, "bench"), b, 0o755)
	for _, name := range []string{"target", "loadgen"} {
		os.WriteFile(filepath.Join(bin, name), nil, 0o755)
	}
	dir := filepath.Join(top, "res")
	cmd := exec.Command(filepath.Join(bin, "bench"), "matrix", "-bin", bin, "-results", dir, "-net", "netns")
	cmd.Dir = top
	cmd.Env = append(os.Environ(), "HOME="+top)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	proctest.WantOneLine(t, cmd, 1, "-net netns: network namespaces need root")
	if _, err := os.Stat(dir); err == nil {
		t.Error("the results folder was created")
	}
}

// TestInterruptedRunSaysSo: SIGINT in the middle of a two-generator
// sample keeps the completed samples, says in env.txt and REPORT.md that
// the run was interrupted, and keeps no generator file of the sample it
// cut short.
func TestInterruptedRunSaysSo(t *testing.T) {
	bin, benchBin := buildAll(t)
	dir := filepath.Join(t.TempDir(), "res")
	cmd := exec.Command(benchBin, "matrix", "-bin", bin, "-results", dir, "-count", "3", "-duration", "1s", "-warmup", "100ms",
		"-workers", "2", "-conns", "close", "-models", "reuseport,single", "-generators", "2", "-c", "4")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The first sample is in raw.txt; the second has started: interrupt it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(filepath.Join(dir, "raw.txt")); bytes.Contains(b, []byte("\nBenchmark")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample after 30s:\n%s", out.String())
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	raw, _ := os.ReadFile(filepath.Join(dir, "raw.txt"))
	samples := strings.Count(string(raw), "\nBenchmark")
	env, _ := os.ReadFile(filepath.Join(dir, "env.txt"))
	if !strings.Contains(string(env), "interrupted: after ") {
		t.Errorf("env.txt does not say the run was interrupted:\n%s\n%s", env, out.String())
	}
	md, _ := os.ReadFile(filepath.Join(dir, "REPORT.md"))
	if !strings.Contains(string(md), "**Interrupted**") {
		t.Errorf("REPORT.md does not say the run was interrupted:\n%.600s", md)
	}
	docs, _ := filepath.Glob(filepath.Join(dir, "json", "*.json"))
	gens, _ := filepath.Glob(filepath.Join(dir, "json", "generators", "*.json"))
	if len(docs) != samples || len(gens) != 2*samples {
		t.Errorf("%d samples in raw.txt, %d in json/, %d generator files (want %d): %v", samples, len(docs), len(gens), 2*samples, gens)
	}
}

// TestKilledNetnsRunCleanedByLoopbackRun: what a SIGKILLed netns run
// leaves (namespaces, links, /run/lbbench state) is removed by the next
// run, even a loopback one.
func TestKilledNetnsRunCleanedByLoopbackRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	bin, benchBin := buildAll(t)
	cmd := exec.Command(benchBin, "matrix", "-bin", bin, "-results", filepath.Join(t.TempDir(), "res"), "-count", "3", "-duration", "2s",
		"-workers", "2", "-conns", "close", "-models", "reuseport", "-net", "netns")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(netpath.Namespaces()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			t.Fatalf("the path never came up:\n%s", out.String())
		}
	}
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // bench and the servers and loads it started
	cmd.Wait()
	if len(netpath.Namespaces()) == 0 {
		t.Fatal("nothing left to clean: the test proves nothing")
	}
	next := exec.Command(benchBin, "matrix", "-bin", bin, "-results", filepath.Join(t.TempDir(), "res"), "-count", "1", "-duration", "100ms",
		"-warmup", "0s", "-workers", "1", "-conns", "close", "-models", "reuseport")
	if b, err := next.CombinedOutput(); err != nil {
		t.Fatalf("loopback run: %v\n%s", err, b)
	}
	if ns := netpath.Namespaces(); len(ns) > 0 {
		t.Errorf("namespaces left after the next loopback run: %v", ns)
	}
	if st, _ := filepath.Glob("/run/lbbench/*.json"); len(st) > 0 {
		t.Errorf("state left in /run/lbbench: %v", st)
	}
}

// TestKTLSRowsNeedKernelTLS: on a kernel without the TLS ULP the kTLS
// rows say so in one line, before anything starts or a folder is made:
// OpenSSL would fall back to user space without a word, and both rows
// would measure the same thing.
func TestKTLSRowsNeedKernelTLS(t *testing.T) {
	if _, err := kernel.KernelTLS(); !errors.Is(err, kernel.ErrNoKernelTLS) {
		t.Skipf("this kernel has TLS (%v): the refusal is not reachable", err)
	}
	bin, benchBin := buildAll(t)
	dir := filepath.Join(t.TempDir(), "res")
	proctest.WantOneLine(t, exec.Command(benchBin, "peers", "-only", "ktls", "-bin", bin, "-results", dir), 1, "kernel TLS cannot be measured on this kernel")
	if _, err := os.Stat(dir); err == nil {
		t.Error("the refused kTLS run created its results folder")
	}
}
