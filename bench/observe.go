package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/observe"
	"github.com/lbbench/lbbench/internal/peers"
)

// cmdObserve starts a target and a real Prometheus with the shipped
// config and rules, prints where to look, and stops both on Ctrl-C.
// Arguments after the flags go to bin/target.
func cmdObserve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("observe", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "folder with target and loadgen")
	promAddr := fs.String("prometheus-addr", "127.0.0.1:9090", "Prometheus web address")
	config := fs.String("config", "deploy/prometheus/prometheus.yml", "Prometheus config (scrapes 127.0.0.1:9100 and :9101)")
	native := fs.Bool("native-histograms", false, "start Prometheus with --enable-feature=native-histograms (2.42 then drops the classic buckets)")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return err
	}
	targs := append([]string{"-addr", "127.0.0.1:8080", "-metrics-addr", "127.0.0.1:9100"}, fs.Args()...)
	tg, err := peers.StartTarget(filepath.Join(*bin, "target"), targs...)
	if err != nil {
		return err
	}
	defer tg.Stop()
	dir, err := os.MkdirTemp("", "lbbench-prometheus-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg, _ := filepath.Abs(*config)
	p, err := observe.Start(observe.Options{Dir: dir, Listen: *promAddr, ConfigFile: cfg, NativeHistograms: *native})
	if err != nil {
		return err
	}
	defer p.Stop()
	graph := p.URL + "/graph?g0.expr=" + url.QueryEscape("model_worker:lbbench_target_requests:rate1m") + "&g0.tab=0&g0.range_input=5m" +
		"&g1.expr=" + url.QueryEscape("model:lbbench_target_requests_imbalance:max_over_mean1m") + "&g1.tab=0&g1.range_input=5m"
	fmt.Fprintf(stdout, "target:     http://127.0.0.1:8080/ (metrics http://127.0.0.1:9100/metrics)\n")
	fmt.Fprintf(stdout, "prometheus: %s\n", graph)
	fmt.Fprintf(stdout, "load it:    bin/loadgen -d 60s -conn close -metrics-addr 127.0.0.1:9101 http://127.0.0.1:8080/\n")
	fmt.Fprintf(stdout, "grafana:    import deploy/grafana/lbbench.json\nCtrl-C stops the target and Prometheus.\n")
	select {
	case <-ctx.Done():
	case <-tg.Done():
	case <-p.Done():
	}
	time.Sleep(100 * time.Millisecond) // a Ctrl-C reaches all three; let ctx see it
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(stdout, "stopping\n")
		return nil
	case isDone(tg.Done()):
		return fmt.Errorf("target exited: %v", tg.Err())
	default:
		return fmt.Errorf("prometheus exited: %v", p.Err())
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
