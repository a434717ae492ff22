package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/perf/benchfmt"

	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/peers"
	"github.com/lbbench/lbbench/internal/report"
)

// peerFlags are the flags both peer comparisons take.
type peerFlags struct {
	dir      string
	bin      string
	rounds   int
	duration time.Duration
	conns    int
	workers  int
}

func parsePeerFlags(name string, args []string, stderr io.Writer) (*peerFlags, error) {
	f := &peerFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.dir, "results", "", "results folder (default results/<date>-<host>/"+name+")")
	fs.StringVar(&f.bin, "bin", "bin", "folder with target and loadgen")
	fs.IntVar(&f.rounds, "count", 10, "rounds; each round measures every variant once, in alternating order")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "length of each measurement (whole seconds: wrk's -d)")
	fs.IntVar(&f.conns, "c", 50, "connections")
	fs.IntVar(&f.workers, "workers", 2, "server worker processes")
	if err := cli.Parse(fs, args, stderr); err != nil {
		return nil, err
	}
	switch {
	case f.rounds < 1:
		return nil, usageErr("-count %d: want at least 1", f.rounds)
	case f.duration < time.Second:
		return nil, usageErr("-duration %v: want at least 1s", f.duration)
	case f.conns < 1 || f.workers < 1:
		return nil, usageErr("-c and -workers must be positive")
	}
	if f.dir == "" {
		f.dir = filepath.Join(defaultResultsDir(), name)
	}
	return f, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func fileConfig(extra ...benchfmt.Config) []benchfmt.Config {
	return report.Config(kernel.ReadHost(), kernel.ReadSysctls(), extra...)
}

// cmdPeersTarget compares bin/target (reuseport) with nginx (reuseport,
// return 200) under wrk, keep-alive and connection-close, interleaved.
func cmdPeersTarget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parsePeerFlags("peers-target", args, stderr)
	if err != nil {
		return err
	}
	res, err := openResultsFile(f.dir)
	if err != nil {
		return err
	}
	tAddr, _ := freeLoopbackAddr()
	nAddr, _ := freeLoopbackAddr()
	tg, err := peers.StartTarget(filepath.Join(f.bin, "target"), "-model", "reuseport", "-workers", strconv.Itoa(f.workers),
		"-addr", tAddr, "-metrics-addr", "off")
	if err != nil {
		return err
	}
	defer tg.Stop(10 * time.Second)
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: nAddr, Workers: f.workers, ReusePort: true})
	if err != nil {
		return err
	}
	defer ng.Stop()

	servers := []struct{ name, addr string }{{"target", tAddr}, {"nginx", nAddr}}
	config := fileConfig()
	p := &progress{w: stderr, n: f.rounds * 4, start: time.Now()}
	rates := map[string][]float64{}
	for round := range f.rounds {
		for _, conn := range []string{"keepalive", "close"} {
			order := slices.Clone(servers)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p.step("round %d: wrk -c%d conn=%s against %s", round+1, f.conns, conn, s.name)
				w, err := peers.Wrk(ctx, "http://"+s.addr+"/", f.conns, f.duration, conn == "close")
				if err != nil {
					return err
				}
				name := fmt.Sprintf("Peer/server=%s/workers=%d/conn=%s", s.name, f.workers, conn)
				rates[s.name+"/"+conn] = append(rates[s.name+"/"+conn], w.RequestsPerSec)
				err = res.add(&benchfmt.Result{Config: config, Name: benchfmt.Name(name), Iters: int(max(w.Requests, 1)),
					Values: []benchfmt.Value{{Value: w.RequestsPerSec, Unit: "req/s"}, {Value: w.P99, Unit: "p99-sec"}}}, "")
				if err != nil {
					return err
				}
			}
		}
	}
	if err := benchstat(f.dir, "benchstat.txt", "-col", "/server", filepath.Join(f.dir, "raw.txt")); err != nil {
		return err
	}
	for _, conn := range []string{"keepalive", "close"} {
		fmt.Fprintf(stdout, "conn=%-9s target/nginx req/s: %.2fx (medians of %d)\n", conn,
			median(rates["target/"+conn])/median(rates["nginx/"+conn]), f.rounds)
	}
	fmt.Fprintf(stdout, "results in %s\n", f.dir)
	return nil
}

// cmdPeersLoadgen compares bin/loadgen with wrk against the same nginx,
// same connection count, interleaved: request rate, CPU per request and
// peak memory.
func cmdPeersLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parsePeerFlags("peers-loadgen", args, stderr)
	if err != nil {
		return err
	}
	res, err := openResultsFile(f.dir)
	if err != nil {
		return err
	}
	nAddr, _ := freeLoopbackAddr()
	ng, err := peers.StartNginx(peers.NginxOptions{Addr: nAddr, Workers: f.workers, ReusePort: true})
	if err != nil {
		return err
	}
	defer ng.Stop()
	url := "http://" + nAddr + "/"
	config := fileConfig()
	p := &progress{w: stderr, n: f.rounds * 4, start: time.Now()}
	type sample struct{ rate, cpuPerReq float64 }
	got := map[string][]sample{}
	for round := range f.rounds {
		for _, conn := range []string{"keepalive", "close"} {
			tools := []string{"wrk", "loadgen"}
			if round%2 == 1 {
				slices.Reverse(tools)
			}
			for _, tool := range tools {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p.step("round %d: %s -c%d conn=%s", round+1, tool, f.conns, conn)
				var rate, cpu, rss float64
				var n int64
				if tool == "wrk" {
					w, err := peers.Wrk(ctx, url, f.conns, f.duration, conn == "close")
					if err != nil {
						return err
					}
					rate, cpu, rss, n = w.RequestsPerSec, w.CPUSeconds, float64(w.MaxRSSBytes), w.Requests
				} else {
					rate, cpu, rss, n, err = runLoadgenProc(ctx, filepath.Join(f.bin, "loadgen"), url, f.conns, f.duration, conn)
					if err != nil {
						return err
					}
				}
				cpuPerReq := cpu / float64(max(n, 1))
				got[tool+"/"+conn] = append(got[tool+"/"+conn], sample{rate, cpuPerReq})
				name := fmt.Sprintf("LoadgenPeer/tool=%s/c=%d/conn=%s", tool, f.conns, conn)
				err = res.add(&benchfmt.Result{Config: config, Name: benchfmt.Name(name), Iters: int(max(n, 1)),
					Values: []benchfmt.Value{{Value: rate, Unit: "req/s"}, {Value: cpuPerReq, Unit: "cpu-sec/req"}, {Value: rss, Unit: "maxrss-B"}}}, "")
				if err != nil {
					return err
				}
			}
		}
	}
	if err := benchstat(f.dir, "benchstat.txt", "-col", "/tool", filepath.Join(f.dir, "raw.txt")); err != nil {
		return err
	}
	for _, conn := range []string{"keepalive", "close"} {
		var lr, wr, lc, wc []float64
		for _, s := range got["loadgen/"+conn] {
			lr, lc = append(lr, s.rate), append(lc, s.cpuPerReq)
		}
		for _, s := range got["wrk/"+conn] {
			wr, wc = append(wr, s.rate), append(wc, s.cpuPerReq)
		}
		fmt.Fprintf(stdout, "conn=%-9s loadgen/wrk req/s: %.2fx  CPU per request: %.2fx (medians of %d)\n",
			conn, median(lr)/median(wr), median(lc)/median(wc), f.rounds)
	}
	fmt.Fprintf(stdout, "results in %s\n", f.dir)
	return nil
}

// runLoadgenProc runs bin/loadgen as its own process (so its CPU and
// memory are measured like wrk's) and reads its JSON.
func runLoadgenProc(ctx context.Context, bin, url string, conns int, d time.Duration, conn string) (rate, cpu, rss float64, n int64, err error) {
	tmp, err := os.CreateTemp("", "loadgen-*.json")
	if err != nil {
		return
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, bin, "-q", "-c", strconv.Itoa(conns), "-d", d.String(), "-conn", conn, "-json", tmp.Name(), url)
	if out, err2 := cmd.CombinedOutput(); err2 != nil {
		err = fmt.Errorf("loadgen: %v: %s", err2, out)
		return
	}
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		return
	}
	var doc report.Doc
	if err = json.Unmarshal(b, &doc); err != nil {
		return
	}
	ps := cmd.ProcessState
	cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss * 1024)
	}
	return doc.RequestsPerSec, cpu, rss, doc.Requests, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
