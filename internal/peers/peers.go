// Package peers runs the tools lbbench is measured against: nginx (as a
// target, with its own access log as ground truth) and wrk (as a load
// generator).
package peers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Nginx is a running nginx with a private prefix directory.
type Nginx struct {
	Addr      string
	Dir       string
	AccessLog string // "" when access logging is off
	cmd       *exec.Cmd
	done      chan error
}

// NginxOptions configure StartNginx.
type NginxOptions struct {
	Addr      string // HOST:PORT
	Workers   int
	ReusePort bool
	// AccessLog logs "$pid $connection $status" per request, the ground
	// truth of which worker served which connection; LogFormat replaces
	// that format (e.g. "combined", nginx's default).
	AccessLog bool
	LogFormat string
	// CPUs, if set, pins nginx (master and workers) to these CPUs.
	CPUs []int
}

// StartNginx writes a config that answers every request with 200 "ok" and
// an X-Worker-Pid header, starts nginx in the foreground, and waits until
// it accepts connections.
func StartNginx(o NginxOptions) (*Nginx, error) {
	if _, err := exec.LookPath("nginx"); err != nil {
		return nil, errors.New("nginx not found: install Debian's nginx-light (make setup does)")
	}
	dir, err := os.MkdirTemp("", "lbbench-nginx-")
	if err != nil {
		return nil, err
	}
	n := &Nginx{Addr: o.Addr, Dir: dir, done: make(chan error, 1)}
	listen := o.Addr
	if o.ReusePort {
		listen += " reuseport"
	}
	logLine := "access_log off;"
	if o.AccessLog {
		n.AccessLog = filepath.Join(dir, "access.log")
		logLine = "log_format lb '$pid $connection $status';\n  access_log " + n.AccessLog + " lb;"
		if o.LogFormat != "" {
			logLine = "access_log " + n.AccessLog + " " + o.LogFormat + ";"
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the prefix directory is root's
	}
	conf := fmt.Sprintf(`%s
worker_processes %d;
daemon off;
master_process on;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 16384; }
http {
  %s
  keepalive_requests 1000000;
  client_body_temp_path %s;
  proxy_temp_path %s;
  fastcgi_temp_path %s;
  uwsgi_temp_path %s;
  scgi_temp_path %s;
  server {
    listen %s backlog=4096;
    location / {
      add_header X-Worker-Pid $pid;
      return 200 "ok\n";
    }
  }
}
`, user, o.Workers, dir, dir, logLine, dir, dir, dir, dir, dir, listen)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	bin, args := "nginx", []string{"-c", confPath, "-p", dir}
	if len(o.CPUs) > 0 {
		bin, args = Pin(o.CPUs, bin, args...)
	}
	n.cmd = exec.Command(bin, args...)
	var stderr bytes.Buffer
	n.cmd.Stderr = &stderr
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := dialTCP(o.Addr); err == nil {
			c.Close()
			return n, nil
		}
		select {
		case err := <-n.done:
			os.RemoveAll(dir)
			msg, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx exited: %v: %s%s", err, strings.TrimSpace(stderr.String()), msg)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.Stop()
			return nil, fmt.Errorf("nginx not accepting on %s after 5s", o.Addr)
		}
	}
}

// Stop stops nginx (SIGQUIT: graceful) and removes its directory.
func (n *Nginx) Stop() error {
	n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
	// Workers die with the master (they watch it); wait for them.
	time.Sleep(50 * time.Millisecond)
	return os.RemoveAll(n.Dir)
}

// Pid is the master's pid.
func (n *Nginx) Pid() int { return n.cmd.Process.Pid }

// LogCounts reads the access log: requests and distinct connections per
// worker pid.
func (n *Nginx) LogCounts() (requests, conns map[string]int, err error) {
	f, err := os.Open(n.AccessLog)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	requests, conns = map[string]int{}, map[string]int{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 3 || fl[2] != "200" {
			continue
		}
		requests[fl[0]]++
		// $connection is a serial number per worker.
		if key := fl[0] + "/" + fl[1]; !seen[key] {
			seen[key] = true
			conns[fl[0]]++
		}
	}
	return requests, conns, sc.Err()
}

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
		bin, args = Pin(o.CPUs, bin, args...)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("wrk: %v", err)
	}
	peak := WatchPeak(cmd.Process.Pid)
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

func dialTCP(addr string) (interface{ Close() error }, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
