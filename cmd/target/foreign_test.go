package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/lbbench/lbbench/internal/proctest"
	"github.com/lbbench/lbbench/internal/sockets"
)

// strayEnv makes the test binary a stray listener: it joins the
// reuseport group on the address it names, says "ready", and holds the
// socket until its stdin closes. It runs as a separate process of the
// same user, as a forgotten old release would.
const strayEnv = "LBBENCH_TEST_STRAY_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(strayEnv); addr != "" {
		fd, err := sockets.Listen(addr, sockets.ListenOptions{ReusePort: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, "stray:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		_ = fd // never accepts: its share of connections waits, as with a stray
		os.Exit(0)
	}
	proctest.Main(m)
}

func TestForeignListenerReported(t *testing.T) {
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	if got := foreignGauge(t, tg); got != 0 {
		t.Fatalf("foreign_listeners = %v before any stray, want 0", got)
	}

	stray := exec.Command(os.Args[0])
	stray.Env = append(os.Environ(), strayEnv+"="+tg.Addr)
	stdin, err := stray.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := stray.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stray.Stderr = os.Stderr
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stray.Process.Kill(); stray.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("stray did not start: %q %v", line, err)
	}
	pid := strconv.Itoa(stray.Process.Pid)
	appeared := regexp.MustCompile(`warning: foreign listener on ` + regexp.QuoteMeta(tg.Addr) + `: pid ` + pid + ` \(\S+\)`)
	gone := regexp.MustCompile(`foreign listener gone: pid ` + pid + ` \(\S+\)`)

	waitFor(t, time.Second, "metric 1 and a warning naming pid "+pid, func() bool {
		return foreignGauge(t, tg) == 1 && appeared.MatchString(tg.Stderr.String())
	})
	lintMetrics(t, tg)
	if n := strings.Count(tg.Stderr.String(), "warning: foreign listener on"); n != 1 {
		t.Errorf("%d warning lines for one stray, want 1:\n%s", n, tg.Stderr.String())
	}

	stdin.Close()
	if err := stray.Wait(); err != nil {
		t.Fatalf("stray: %v", err)
	}
	waitFor(t, time.Second, "metric 0 and a gone line", func() bool {
		return foreignGauge(t, tg) == 0 && gone.MatchString(tg.Stderr.String())
	})
}

// lintMetrics runs promlint over the scrape while the gauge is non-zero.
func lintMetrics(t *testing.T, tg *proctest.Target) {
	t.Helper()
	resp, err := http.Get("http://" + tg.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	problems, err := promlint.New(resp.Body).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func foreignGauge(t *testing.T, tg *proctest.Target) float64 {
	t.Helper()
	f := tg.Metrics(t)["lbbench_target_foreign_listeners"]
	if f == nil || len(f.Metric) != 1 {
		t.Fatalf("lbbench_target_foreign_listeners missing or not one series: %v", f)
	}
	return f.Metric[0].GetGauge().GetValue()
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
