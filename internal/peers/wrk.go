package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/lbbench/lbbench/internal/budget"
)

// WrkResult is what wrk printed.
type WrkResult struct {
	Requests       int64
	RequestsPerSec float64
	Errors         int64
	CPUSeconds     float64 // wrk's own user+system time
	MaxRSSBytes    int64   // peak resident memory (VmHWM)
	P50, P90, P99  float64 // seconds, from --latency
	PID            int     // wrk's pid (taskset execs it in place)
}

var (
	reReqs    = regexp.MustCompile(`(\d+) requests in`)
	reRate    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reErrs    = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reLatency = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$`)
)

// WrkOptions say how to run wrk.
type WrkOptions struct {
	Threads, Conns int
	Duration       time.Duration // whole seconds
	Close          bool          // -H "Connection: close" (with the space: wrk ignores it without)
	CPUs           []int         // pin wrk here
}

// Wrk runs wrk with one thread against url and parses its output.
func Wrk(ctx context.Context, url string, conns int, d time.Duration, closeConn bool) (*WrkResult, error) {
	return RunWrk(ctx, url, WrkOptions{Threads: 1, Conns: conns, Duration: d, Close: closeConn})
}

// RunWrk runs wrk against url and parses its output.
func RunWrk(ctx context.Context, url string, o WrkOptions) (*WrkResult, error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk not found: install Debian's wrk (make setup does)")
	}
	args := []string{"-t" + strconv.Itoa(max(o.Threads, 1)), "-c" + strconv.Itoa(o.Conns), "-d" + strconv.Itoa(int(o.Duration.Seconds())) + "s", "--latency"}
	if o.Close {
		args = append(args, "-H", "Connection: close")
	}
	bin := "wrk"
	if len(o.CPUs) > 0 {
		bin, args = budget.Pin(o.CPUs, bin, args...)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("wrk: %v", err)
	}
	peak := budget.WatchPeak(cmd.Process.Pid)
	err := cmd.Wait()
	r := &WrkResult{PID: cmd.Process.Pid, MaxRSSBytes: peak()}
	if err != nil {
		return nil, fmt.Errorf("wrk: %v", err)
	}
	out := stdout.Bytes()
	if m := reReqs.FindSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	m := reRate.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("wrk: no Requests/sec in output:\n%s", out)
	}
	r.RequestsPerSec, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reErrs.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			r.Errors += n
		}
	}
	if m := reNon2xx.FindSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.Errors += n
	}
	for _, m := range reLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "us":
			v /= 1e6
		case "ms":
			v /= 1e3
		}
		switch string(m[1]) {
		case "50":
			r.P50 = v
		case "90":
			r.P90 = v
		case "99":
			r.P99 = v
		}
	}
	if ps := cmd.ProcessState; ps != nil {
		r.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, nil
}
