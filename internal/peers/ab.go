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

// ABResult is what ab (ApacheBench) printed.
type ABResult struct {
	Requests       int64 // complete requests
	RequestsPerSec float64
	Errors         int64   // failed requests and non-2xx responses
	CPUSeconds     float64 // ab's own user+system time
	MaxRSSBytes    int64
	PID            int
}

var (
	reABComplete = regexp.MustCompile(`Complete requests:\s+(\d+)`)
	reABFailed   = regexp.MustCompile(`Failed requests:\s+(\d+)`)
	reABNon2xx   = regexp.MustCompile(`Non-2xx responses:\s+(\d+)`)
	reABRate     = regexp.MustCompile(`Requests per second:\s+([\d.]+)`)
)

// ABOptions say how to run ab. ab has one thread and no keep-alive
// unless -k: a new connection per request, and over https a full TLS
// handshake on each (it keeps no session to resume).
type ABOptions struct {
	Conns    int
	Duration time.Duration // ab's -t, whole seconds
	CPUs     []int         // pin ab here
}

// RunAB runs ab against url and parses its output.
func RunAB(ctx context.Context, url string, o ABOptions) (*ABResult, error) {
	if _, err := exec.LookPath("ab"); err != nil {
		return nil, errors.New("ab not found: install Debian's apache2-utils (make setup does)")
	}
	// -t alone stops at 50,000 requests; -n lifts that so the time rules.
	args := []string{"-q", "-c", strconv.Itoa(o.Conns), "-t", strconv.Itoa(int(o.Duration.Seconds())), "-n", "100000000"}
	bin := "ab"
	if len(o.CPUs) > 0 {
		bin, args = budget.Pin(o.CPUs, bin, args...)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ab: %v", err)
	}
	peak := budget.WatchPeak(cmd.Process.Pid)
	err := cmd.Wait()
	r := &ABResult{PID: cmd.Process.Pid, MaxRSSBytes: peak()}
	if err != nil {
		return nil, fmt.Errorf("ab: %v: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	b := out.Bytes()
	m := reABRate.FindSubmatch(b)
	if m == nil {
		return nil, fmt.Errorf("ab: no Requests per second in output:\n%s", b)
	}
	r.RequestsPerSec, _ = strconv.ParseFloat(string(m[1]), 64)
	count := func(re *regexp.Regexp) int64 {
		if m := re.FindSubmatch(b); m != nil {
			n, _ := strconv.ParseInt(string(m[1]), 10, 64)
			return n
		}
		return 0
	}
	r.Requests = count(reABComplete)
	r.Errors = count(reABFailed) + count(reABNon2xx)
	if ps := cmd.ProcessState; ps != nil {
		r.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, nil
}
