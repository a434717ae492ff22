package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/netpath"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// resultsFile is one results folder being written. raw.txt is rewritten
// whole (temp file, rename) after every sample, so an interrupted run
// keeps every completed sample and never leaves half a line.
type resultsFile struct {
	dir     string
	raw     bytes.Buffer
	w       *benchfmt.Writer
	samples int
}

// defaultResultsDir is results/<UTC date>-<host>.
func defaultResultsDir() string {
	host, _ := os.Hostname()
	return filepath.Join("results", time.Now().UTC().Format("2006-01-02")+"-"+host)
}

// freshDir refuses a results folder that already holds something: a new
// run's samples would sit beside an old run's json/ files, and the report
// would read both as one.
func freshDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil // absent (or unreadable: creating it will say why)
	}
	return usageErr("results folder %s is not empty: give -results a new folder", dir)
}

// markInterrupted records in env.txt, which the report's header reads,
// that the run stopped early.
func (r *resultsFile) markInterrupted(planned int) error {
	path := filepath.Join(r.dir, "env.txt")
	env, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("interrupted: after %d of %d samples\n", r.samples, planned)
	return atomicfile.WriteBytes(path, append(env, line...))
}

// cleanStale removes what a killed netns run left (namespaces, links,
// /run/lbbench state) whatever path this run takes: otherwise only the
// next netns run would.
func cleanStale(stderr io.Writer) {
	if os.Geteuid() != 0 {
		return
	}
	removed, err := netpath.CleanStale()
	for _, r := range removed {
		fmt.Fprintf(stderr, "removed the network path a killed run left: %s\n", r)
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: stale network path: %v\n", err)
	}
}

// openResultsFile creates the folder and its env.txt; cpuSets says how
// the run places servers and clients ("": the matrix's rule).
func openResultsFile(dir, cpuSets string) (*resultsFile, error) {
	if err := os.MkdirAll(filepath.Join(dir, "json"), 0o755); err != nil {
		return nil, err
	}
	r := &resultsFile{dir: dir}
	r.w = benchfmt.NewWriter(&r.raw)
	if err := rundoc.WriteUnits(r.w); err != nil {
		return nil, err
	}
	// Config lines go out with the first result.
	r.raw.WriteString("\n")
	if err := writeEnv(dir, cpuSets); err != nil {
		return nil, err
	}
	return r, nil
}

// add appends one result and rewrites raw.txt.
func (r *resultsFile) add(res *benchfmt.Result, comment string) error {
	if comment != "" {
		r.raw.WriteString("# " + comment + "\n")
	}
	if err := r.w.Write(res); err != nil {
		return err
	}
	r.samples++
	return atomicfile.WriteBytes(filepath.Join(r.dir, "raw.txt"), r.raw.Bytes())
}

// writeEnv records the machine: kernel, CPUs, Go, sysctls, commit, and
// what else was running.
func writeEnv(dir, cpuSets string) error {
	h := kernel.ReadHost()
	var b strings.Builder
	fmt.Fprintf(&b, "date: %s\nhost: %s\nkernel: %s\ncpu: %s\ncpu-count: %d\ngo: %s\ncommit: %s\n",
		time.Now().UTC().Format(time.RFC3339), h.Hostname, h.Kernel, h.CPUModel, h.CPUs, runtime.Version(), commit())
	sys := kernel.ReadSysctls()
	for _, k := range kernel.Sysctls {
		key := strings.ReplaceAll(k, "/", ".")
		fmt.Fprintf(&b, "%s: %s\n", key, sys[key])
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&b, "loadavg-at-start: %s", la)
	}
	switch {
	case cpuSets != "":
		fmt.Fprintf(&b, "cpu-sets: %s\n", cpuSets)
	case runtime.NumCPU() < 4:
		fmt.Fprintf(&b, "cpu-sets: shared (fewer than 4 CPUs: target and loadgen run on the same CPUs)\n")
	default:
		fmt.Fprintf(&b, "cpu-sets: disjoint (target on the first half of the CPUs, loadgen on the rest)\n")
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "env.txt"), []byte(b.String()))
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// benchstat runs `go tool benchstat args...` and writes its output to
// file in dir.
func benchstat(dir, file string, args ...string) error {
	var out bytes.Buffer
	if err := runBenchstatTo(&out, args...); err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, file), out.Bytes())
}

// runBenchstatTo runs the benchstat pinned in go.mod (go tool benchstat).
func runBenchstatTo(w io.Writer, args ...string) error {
	cmd := exec.Command("go", append([]string{"tool", "benchstat"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("benchstat %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// progress prints "[k/n] what" lines.
type progress struct {
	w     io.Writer
	n, k  int
	start time.Time
}

func (p *progress) step(format string, a ...any) {
	p.k++
	eta := ""
	if p.k > 1 {
		per := time.Since(p.start) / time.Duration(p.k-1)
		eta = fmt.Sprintf(" (eta %v)", (per * time.Duration(p.n-p.k+1)).Round(time.Second))
	}
	fmt.Fprintf(p.w, "[%d/%d]%s %s\n", p.k, p.n, eta, fmt.Sprintf(format, a...))
}
