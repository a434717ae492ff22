// Package observe runs a real Prometheus server next to lbbench's programs
// (for `make observe` and the end-to-end tests) and queries it over its
// HTTP API.
package observe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configure a Prometheus server.
type Options struct {
	// Dir holds the config and the TSDB; it must exist.
	Dir string
	// Listen is the web address, e.g. 127.0.0.1:9090.
	Listen string
	// Scrape is the scrape and rule-evaluation interval.
	Scrape time.Duration
	// Rules is the path of a rules file (optional).
	Rules string
	// Targets maps job names to HOST:PORT.
	Targets map[string]string
	// ConfigFile, if set, is used as it is instead of a config rendered
	// from Scrape, Rules and Targets.
	ConfigFile string
	// NativeHistograms starts Prometheus with
	// --enable-feature=native-histograms. Prometheus 2.42 then keeps only
	// the native form of histograms that have one: the classic _bucket
	// series (and rules built on them) go away.
	NativeHistograms bool
}

// Config renders the prometheus.yml for o.
func Config(o Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", o.Scrape, o.Scrape)
	if o.Rules != "" {
		fmt.Fprintf(&b, "rule_files:\n  - %q\n", o.Rules)
	}
	b.WriteString("scrape_configs:\n")
	jobs := make([]string, 0, len(o.Targets))
	for j := range o.Targets {
		jobs = append(jobs, j)
	}
	sort.Strings(jobs)
	for _, j := range jobs {
		fmt.Fprintf(&b, "  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", j, o.Targets[j])
	}
	return b.String()
}

// Prometheus is a running server.
type Prometheus struct {
	URL  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error
	log  *bytes.Buffer
}

// ErrNotInstalled says the prometheus binary is missing.
var ErrNotInstalled = errors.New("prometheus not found: install Debian's prometheus package (make setup does, as root)")

// Start writes the config and starts Prometheus, returning when it is
// ready to answer queries.
func Start(o Options) (*Prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, ErrNotInstalled
	}
	cfg := o.ConfigFile
	if cfg == "" {
		cfg = filepath.Join(o.Dir, "prometheus.yml")
		if err := os.WriteFile(cfg, []byte(Config(o)), 0o644); err != nil {
			return nil, err
		}
	}
	args := []string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(o.Dir, "data"),
		"--web.listen-address=" + o.Listen,
		"--log.level=warn",
	}
	if o.NativeHistograms {
		args = append(args, "--enable-feature=native-histograms")
	}
	p := &Prometheus{URL: "http://" + o.Listen, done: make(chan struct{}), log: &bytes.Buffer{}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("prometheus exited: %v: %s", p.err, lastLines(p.log.String(), 3))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("prometheus not ready on %s after 30s", o.Listen)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// Stop stops Prometheus and waits for it.
func (p *Prometheus) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Done is closed when Prometheus has exited; Err then says how.
func (p *Prometheus) Done() <-chan struct{} { return p.done }

// Err is the exit error once Done is closed.
func (p *Prometheus) Err() error { return p.err }

// Sample is one element of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query evaluates an instant query.
func (p *Prometheus) Query(expr string) ([]Sample, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	var out []Sample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v", expr, r.Value[1])
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}
