package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/results"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// TestBenchQuick runs `make bench-quick` into a temporary folder and checks
// its raw.txt with benchstat itself: at least 6 samples per cell, every
// model a column, latencies in seconds; and that the report was written.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench pipeline for about a minute")
	}
	root, _ := filepath.Abs("..")
	dir := t.TempDir()
	cmd := exec.Command("make", "-s", "bench-quick", "RESULTS="+dir)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make bench-quick: %v\n%s", err, out.String())
	}
	var stdout, stderr bytes.Buffer
	if code := run(append([]string{"check", dir}, defaultModels...), &stdout, &stderr); code != 0 {
		t.Fatalf("check: %s%s", stdout.String(), stderr.String())
	}
	for _, f := range []string{"raw.txt", "benchstat.txt", "benchstat-workers.txt", "env.txt", "REPORT.md"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(dir, "REPORT.md"))
	if !strings.Contains(string(rep), "## What to use") || !strings.Contains(string(rep), "-share-workers-") {
		t.Errorf("REPORT.md lacks a summary or charts:\n%s", rep)
	}
	charts, _ := filepath.Glob(filepath.Join(dir, "charts", "*.svg"))
	if len(charts) < 2 {
		t.Errorf("charts: %v", charts)
	}
}

// TestServersInTheMatrix: real servers run through the matrix as models,
// attributed by the kernel (every cell of the group, the target's too),
// HAProxy by thread and in-process workers by id.
func TestServersInTheMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real servers are attributed by the kernel: root (CI runs as root)")
	}
	bin, _ := buildAll(t)
	dir := t.TempDir()
	models := []string{"reuseport", "nginx-shared", "haproxy", "gohttp", "inproc-reuseport"}
	var stdout, stderr bytes.Buffer
	code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "300ms", "-warmup", "100ms",
		"-workers", "2", "-conns", "close", "-models", strings.Join(models, ",")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	for _, m := range models {
		docs, _ := filepath.Glob(filepath.Join(dir, "json", "Accept_model-"+m+"_*.json"))
		if len(docs) != 1 {
			t.Fatalf("%s: json %v", m, docs)
		}
		b, _ := os.ReadFile(docs[0])
		var d rundoc.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		a := d.Attribution
		want := map[string]string{"haproxy": "thread", "inproc-reuseport": "worker"}[m]
		if want == "" {
			want = "process"
		}
		if a.Mode == "header" || a.FairBy != want || a.Missed != 0 || len(d.Units()) != 2 || d.Errors != 0 {
			t.Errorf("%s: attribution %+v, %d workers counted, %d errors; want the kernel's, by %s, 2 workers", m, a, len(d.Units()), d.Errors, want)
		}
	}
}

// TestGenerators: with -generators 2 each sample is two loadgens,
// merged: the sample's JSON names both, their own runs are kept apart
// from the samples, and the counts add up.
func TestGenerators(t *testing.T) {
	bin, _ := buildAll(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "300ms", "-warmup", "100ms",
		"-workers", "2", "-conns", "close", "-models", "reuseport", "-generators", "2"}, &stdout, &stderr); code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	samples, _ := filepath.Glob(filepath.Join(dir, "json", "*.json"))
	gens, _ := filepath.Glob(filepath.Join(dir, "json", "generators", "*.json"))
	if len(samples) != 1 || len(gens) != 2 {
		t.Fatalf("samples %v, generator runs %v", samples, gens)
	}
	b, _ := os.ReadFile(samples[0])
	var d rundoc.Doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, pc := range d.PerPID {
		sum += pc.Requests
	}
	if len(d.Inputs) != 2 || sum != d.Requests || d.Requests != d.Inputs[0].Requests+d.Inputs[1].Requests {
		t.Errorf("merged %d requests (per pid %d) from %+v", d.Requests, sum, d.Inputs)
	}
}

// buildAll builds the commands and the bench itself into a temporary
// folder.
func buildAll(t *testing.T) (bin, benchBin string) {
	t.Helper()
	root, _ := filepath.Abs("..")
	bin = filepath.Join(t.TempDir(), "bin")
	for _, b := range [][]string{{"-o", bin + "/", "./cmd/..."}, {"-o", bin + "/bench", "./bench"}} {
		build := exec.Command("go", append([]string{"build"}, b...)...)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	return bin, filepath.Join(bin, "bench")
}

// TestNetnsMatrix: with -net netns a sample is one loadgen per client
// namespace, merged; the path is recorded in env.txt and gone after the
// run, and after an interrupted one.
func TestNetnsMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	bin, benchBin := buildAll(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "300ms", "-warmup", "100ms",
		"-workers", "2", "-conns", "close", "-models", "reuseport,nginx-shared", "-net", "netns", "-clients", "3"}, &stdout, &stderr); code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	for _, m := range []string{"reuseport", "nginx-shared"} {
		docs, _ := filepath.Glob(filepath.Join(dir, "json", "Accept_model-"+m+"_*.json"))
		if len(docs) != 1 {
			t.Fatalf("%s: %v", m, docs)
		}
		b, _ := os.ReadFile(docs[0])
		var d rundoc.Doc
		json.Unmarshal(b, &d)
		if len(d.Inputs) != 3 || d.Errors != 0 || !strings.Contains(d.URL, "198.19.0.1") {
			t.Errorf("%s: %d inputs, %d errors, url %s", m, len(d.Inputs), d.Errors, d.URL)
		}
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env.txt"))
	if !strings.Contains(string(env), "netpath: target namespace") {
		t.Errorf("env.txt does not record the path:\n%s", env)
	}
	if ns := netpath.Namespaces(); len(ns) > 0 {
		t.Errorf("namespaces left after the run: %v", ns)
	}

	// Interrupted once the path is up: nothing left either.
	cmd := exec.Command(benchBin, "matrix", "-bin", bin, "-results", t.TempDir(), "-count", "3", "-duration", "2s",
		"-workers", "2", "-conns", "close", "-models", "reuseport", "-net", "netns")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(netpath.Namespaces()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the path never came up:\n%s", out.String())
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	if ns := netpath.Namespaces(); len(ns) > 0 {
		t.Errorf("namespaces left after SIGINT: %v\n%s", ns, out.String())
	}
}

// TestUDPScenario: the udp-rebind scenario runs UDP cells end to end:
// bpf-flow keeps every rebinding flow on its worker, the hash does not.
func TestUDPScenario(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bpf-flow loads an eBPF program: root (CI runs as root)")
	}
	bin, _ := buildAll(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"matrix", "-bin", bin, "-results", dir, "-count", "1", "-duration", "300ms", "-warmup", "100ms",
		"-scenarios", "udp-rebind"}, &stdout, &stderr); code != 0 {
		t.Fatalf("matrix: %s%s", stdout.String(), stderr.String())
	}
	for m, keeps := range map[string]bool{"udp-bpf-flow": true, "udp-reuseport": false} {
		docs, _ := filepath.Glob(filepath.Join(dir, "json", "UDPRebind_model-"+m+"_*.json"))
		if len(docs) != 1 {
			t.Fatalf("%s: %v", m, docs)
		}
		b, _ := os.ReadFile(docs[0])
		var d rundoc.Doc
		json.Unmarshal(b, &d)
		if d.UDP == nil || d.UDP.Rebinds == 0 || (d.UDP.FirstWorkerShare == 1) != keeps {
			t.Errorf("%s: udp %+v", m, d.UDP)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "raw.txt"))
	if !strings.Contains(string(raw), "first-worker-share") {
		t.Errorf("raw.txt lacks the UDP figures:\n%s", raw)
	}
}

// TestCheckCatchesTooFewSamples: the check is not a test that cannot fail.
func TestCheckCatchesTooFewSamples(t *testing.T) {
	dir := t.TempDir()
	raw := "cpu: x\nBenchmarkAccept/model=a/conn=close 1 100 req/s 0.001 p50-sec 0.002 p99-sec\n" +
		"BenchmarkAccept/model=b/conn=close 1 90 req/s 0.001 p50-sec 0.003 p99-sec\n"
	os.WriteFile(filepath.Join(dir, "raw.txt"), []byte(raw), 0o644)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", dir, "a", "b", "c"}, &stdout, &stderr); code == 0 {
		t.Fatalf("check passed a folder with 1 sample per cell and a missing model:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "fewer than 6 samples") || !strings.Contains(stderr.String(), "model c has no samples") {
		t.Errorf("check said: %s", stderr.String())
	}
}

// TestReferenceReports: every committed results folder's REPORT.md and
// charts are what the report pipeline makes of its raw.txt and json/
// today, byte for byte. A change to the report shows here as a diff;
// `go run ./bench report results/DIR` regenerates them.
func TestReferenceReports(t *testing.T) {
	dirs, _ := filepath.Glob("../results/*/raw.txt")
	if len(dirs) == 0 {
		t.Fatal("no committed results")
	}
	peerDirs, _ := filepath.Glob("../results/*/peers/raw.txt")
	for _, raw := range append(dirs, peerDirs...) {
		ref := filepath.Dir(raw)
		secs := sections()
		if slices.Contains(peerDirs, raw) {
			secs = peerSections
		}
		t.Run(strings.TrimPrefix(ref, "../results/"), func(t *testing.T) {
			tmp := t.TempDir()
			// A peers folder has no loadgen documents, and git keeps no empty json/.
			if _, err := os.Stat(filepath.Join(ref, "json")); err == nil {
				if err := os.CopyFS(filepath.Join(tmp, "json"), os.DirFS(filepath.Join(ref, "json"))); err != nil {
					t.Fatal(err)
				}
			}
			copyFile(t, filepath.Join(ref, "raw.txt"), filepath.Join(tmp, "raw.txt"))
			copyFile(t, filepath.Join(ref, "env.txt"), filepath.Join(tmp, "env.txt"))
			if err := results.Write(tmp, secs); err != nil {
				t.Fatal(err)
			}
			for _, f := range append([]string{"REPORT.md"}, chartsOf(t, ref)...) {
				want, _ := os.ReadFile(filepath.Join(ref, f))
				got, err := os.ReadFile(filepath.Join(tmp, f))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s differs from what the pipeline makes of %s (regenerate: go run ./bench report %s)", f, ref, ref)
				}
			}
			if made, want := chartsOf(t, tmp), chartsOf(t, ref); !slices.Equal(made, want) {
				t.Errorf("charts made %v, committed %v", made, want)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(to, b, 0o644)
}

func chartsOf(t *testing.T, dir string) []string {
	fs, _ := filepath.Glob(filepath.Join(dir, "charts", "*.svg"))
	var out []string
	for _, f := range fs {
		out = append(out, filepath.Join("charts", filepath.Base(f)))
	}
	return out
}

func TestMatrixBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"matrix", "-count", "0"},
		{"matrix", "-models", "fastest"},
		{"matrix", "-workers", "0"},
		{"matrix", "-conns", "sometimes"},
		{"matrix", "-scenarios", "nope"},
		{"nonsense"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr.String())
		}
		if s := strings.TrimSpace(stderr.String()); strings.Count(s, "\n") > 0 || s == "" {
			t.Errorf("%v: want one line, got %q", args, s)
		}
	}
}
