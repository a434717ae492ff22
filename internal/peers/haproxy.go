package peers

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HAProxy is a running HAProxy: one process, a thread per worker.
type HAProxy struct {
	Addr string
	Dir  string
	d    *daemon
}

// HAProxyOptions configure StartHAProxy.
type HAProxyOptions struct {
	// NetNS, if set, is the network namespace to run in (netpath's).
	NetNS   string
	Addr    string // HOST:PORT
	Threads int    // nbthread
	// Shards gives each thread its own SO_REUSEPORT socket (bind ...
	// shards by-thread); otherwise the threads share one.
	Shards bool
	// Log logs every request with the thread that served it (%[thread])
	// to a ring in memory (Stats.ThreadRequests reads it), and with TLS
	// whether its session was resumed (Stats.SessionReuse).
	Log bool
	// SingleQueue turns off the listener's multi-queue accept (on by
	// default): a thread then serves every connection it accepts, rather
	// than handing some to less loaded threads.
	SingleQueue bool
	// Work, if set, burns this much CPU per request in a Lua service.
	Work time.Duration
	CPUs []int
	// CertFile and KeyFile, if set, make the bind terminate TLS (HAProxy's
	// defaults: 1.2 and 1.3, session tickets on, so clients can resume).
	CertFile, KeyFile string
	// MaxConn is the process's and the frontend's maxconn (0: 8000).
	MaxConn int
}

// StartHAProxy writes a config whose frontend answers every request
// itself with 200 "ok" (http-request return; no backend) and starts
// HAProxy in the foreground.
func StartHAProxy(o HAProxyOptions) (*HAProxy, error) {
	d, err := newDaemon("haproxy")
	if err != nil {
		return nil, err
	}
	h := &HAProxy{Addr: o.Addr, Dir: d.dir, d: d}
	conf, files, err := o.conf(d.dir)
	if err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	files["haproxy.cfg"] = []byte(conf)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(d.dir, name), b, 0o600); err != nil {
			os.RemoveAll(d.dir)
			return nil, err
		}
	}
	cfg := filepath.Join(d.dir, "haproxy.cfg")
	// -db: stay in the foreground.
	if err := d.start(launch{netns: o.NetNS, cpus: o.CPUs, addr: o.Addr, argv: []string{"haproxy", "-db", "-f", cfg}}); err != nil {
		return nil, err
	}
	return h, nil
}

// conf is haproxy.cfg for these options, with its files in dir, and the
// other files it names there (the certificate and key in one PEM, the
// Lua handler), by name.
func (o HAProxyOptions) conf(dir string) (string, map[string][]byte, error) {
	files := map[string][]byte{}
	var global, sections, front []string
	bind := "bind " + o.Addr + " backlog 4096"
	if o.CertFile != "" {
		// HAProxy reads the certificate and its key from one PEM file.
		pem, err := concatFiles(o.CertFile, o.KeyFile)
		if err != nil {
			return "", nil, fmt.Errorf("haproxy: %w", err)
		}
		files["tls.pem"] = pem
		bind += " ssl crt " + filepath.Join(dir, "tls.pem")
	}
	if o.Shards {
		bind += " shards by-thread"
	}
	front = append(front, bind)
	if o.Log {
		// A ring never drops a line while it has room; HAProxy's writes to
		// stdout give up when another thread holds the file.
		sections = append(sections, "ring requests\n  format raw\n  size 33554432")
		format := "%[thread] %ci:%cp"
		if o.CertFile != "" {
			format += " %[ssl_fc_is_resumed]" // 1: the session was resumed
		}
		front = append(front, "log ring@requests local0", `log-format "`+format+`"`)
	}
	if o.SingleQueue {
		global = append(global, "tune.listener.multi-queue off")
	}
	if o.Work > 0 {
		lua := filepath.Join(dir, "burn.lua")
		files["burn.lua"] = fmt.Appendf(nil, haproxyBurn, o.Work.Microseconds())
		// A state per thread (lua-load shares one, behind a lock), and no
		// forced yield in the middle of a spin: the other servers do not
		// yield either.
		global = append(global, "lua-load-per-thread "+lua, "tune.lua.forced-yield 1000000000")
		front = append(front, "http-request use-service lua.burn")
	} else {
		front = append(front, `http-request return status 200 content-type text/plain string "ok\n" hdr X-Worker-Pid "%pid"`)
	}
	return fmt.Sprintf(`global
  nbthread %d
  maxconn %[6]d
  no strict-limits
  pidfile %[2]s/haproxy.pid
  stats socket %[2]s/admin.sock level operator
  %[3]s
defaults
  mode http
  timeout client 30s
  timeout connect 5s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 30s
  option dontlognull
%[5]s
frontend lbbench
  maxconn %[6]d
  %[4]s
`, o.Threads, dir, strings.Join(global, "\n  "), strings.Join(front, "\n  "), strings.Join(sections, "\n"), cmp.Or(o.MaxConn, 8000)), files, nil
}

func concatFiles(names ...string) ([]byte, error) {
	var out []byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// haproxyBurn is a Lua service that spins for the given microseconds,
// then answers. HAProxy's Lua has no clock that moves within a task
// (core.now is the event loop's), so the spin is a loop count
// calibrated when the file loads: the median of seven timed runs, under
// a count hook as services run (HAProxy's forced-yield hook halves the
// interpreter's speed). Measured against os.clock in one thread, a
// request then burns about 110-115 us for 100.
const haproxyBurn = `
local work = %d
local function spin(n) local x = 0 for i = 1, n do x = x + i end return x end
debug.sethook(function() end, "", 1000000000)
local runs = {}
for k = 1, 7 do
  local t0 = os.clock(); spin(1000000); runs[k] = os.clock() - t0
end
debug.sethook()
table.sort(runs)
local iters = math.floor(work * 1e6 / (runs[4] * 1e6))
core.register_service("burn", "http", function(applet)
  spin(iters)
  applet:set_status(200)
  applet:add_header("content-length", "3")
  applet:start_response()
  applet:send("ok\n")
end)
`

// Stop stops HAProxy (SIGUSR1: finish the connections it has, then exit)
// and removes its directory.
func (h *HAProxy) Stop() error { return h.d.stop(syscall.SIGUSR1) }

// Pid is HAProxy's one process.
func (h *HAProxy) Pid() int { return h.d.pid() }

// Stats is a session on HAProxy's stats socket. One session serves
// every query: HAProxy counts the session's own connection as an accept,
// once.
type Stats struct {
	c  net.Conn
	rd *bufio.Reader
}

// Stats opens a session on the stats socket, in interactive mode.
func (h *HAProxy) Stats() (*Stats, error) {
	// HAProxy may open its stats socket after its listeners.
	var c net.Conn
	var err error
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.DialTimeout("unix", filepath.Join(h.Dir, "admin.sock"), time.Second); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	s := &Stats{c: c, rd: bufio.NewReader(c)}
	if _, err := s.query("prompt"); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Close ends the session.
func (s *Stats) Close() error { return s.c.Close() }

// query sends a command and reads its answer, up to the prompt.
func (s *Stats) query(cmd string) ([]string, error) { return s.queryWithin(cmd, 2*time.Second) }

// queryWithin is query with the answer's time limit.
func (s *Stats) queryWithin(cmd string, d time.Duration) ([]string, error) {
	s.c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(s.c, cmd+"\n"); err != nil {
		return nil, err
	}
	var lines []string
	for {
		// The prompt ends an answer: "\n> " with no newline after it.
		if b, err := s.rd.Peek(2); err == nil && string(b) == "> " {
			s.rd.Discard(2)
			return lines, nil
		}
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("haproxy stats socket: %v", err)
		}
		lines = append(lines, strings.TrimRight(line, "\n"))
	}
}

// Activity is HAProxy's own per-thread record ("show activity"): for
// each counter, one value per thread, HAProxy's thread 0 first.
func (s *Stats) Activity() (map[string][]int64, error) {
	lines, err := s.query("show activity")
	if err != nil {
		return nil, err
	}
	out := map[string][]int64{}
	for _, l := range lines {
		// "accepted: 3001 [ 961 1096 944 ]": the total, then per thread.
		name, rest, ok := strings.Cut(l, ":")
		_, list, ok2 := strings.Cut(rest, "[")
		list, _, ok3 := strings.Cut(list, "]")
		if !ok || !ok2 || !ok3 {
			continue
		}
		var vals []int64
		for f := range strings.FieldsSeq(list) {
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("haproxy show activity: %q", l)
			}
			vals = append(vals, v)
		}
		out[name] = vals
	}
	if len(out["accepted"]) == 0 {
		return nil, errors.New("haproxy show activity: no accepted counters")
	}
	return out, nil
}

// SessionReuse reads a TLS log (Log with CertFile): requests on resumed
// sessions and on full handshakes, by HAProxy's ssl_fc_is_resumed.
func (s *Stats) SessionReuse() (resumed, full int, err error) {
	lines, err := s.logLines()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			return 0, 0, fmt.Errorf("haproxy log line %q: want thread, client and ssl_fc_is_resumed", l)
		}
		switch f[2] {
		case "1":
			resumed++
		case "0":
			full++
		}
	}
	return resumed, full, nil
}

// logLines reads the request log's lines; it fails if HAProxy dropped
// any.
func (s *Stats) logLines() ([]string, error) {
	info, err := s.query("show info")
	if err != nil {
		return nil, err
	}
	if !slices.Contains(info, "DroppedLogs: 0") {
		return nil, errors.New("haproxy dropped log lines (show info: DroppedLogs)")
	}
	lines, err := s.query("show events requests")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(lines, func(l string) bool { return l == "" }), nil
}

// ThreadRequests reads the log (Log): requests per HAProxy thread
// number. It fails if HAProxy dropped any line.
func (s *Stats) ThreadRequests() (map[int]int, error) {
	lines, err := s.logLines()
	if err != nil {
		return nil, err
	}
	requests := map[int]int{}
	for _, l := range lines {
		var thread int
		var client string
		if _, err := fmt.Sscanf(l, "%d %s", &thread, &client); err != nil {
			return nil, fmt.Errorf("haproxy log line %q: %v", l, err)
		}
		requests[thread]++
	}
	return requests, nil
}

// ConnectionThreads counts the frontend's open client connections by
// the thread that runs each ("show fd": a connection's tmask is its one
// thread's bit), HAProxy's thread 0 first. Listeners, pipes and the stats
// session itself are not counted.
func (s *Stats) ConnectionThreads() (map[int]int, error) {
	lines, err := s.queryWithin("show fd", 30*time.Second) // tens of thousands of lines
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, l := range lines {
		if !strings.Contains(l, "(sock_conn_iocb)") || !strings.Contains(l, " fe=lbbench ") {
			continue
		}
		_, rest, ok := strings.Cut(l, " tmask=0x")
		mask, _, _ := strings.Cut(rest, " ")
		m, err := strconv.ParseUint(mask, 16, 64)
		if !ok || err != nil || m == 0 || m&(m-1) != 0 {
			return nil, fmt.Errorf("haproxy show fd: a connection not on one thread: %q", l)
		}
		out[bits.TrailingZeros64(m)]++
	}
	return out, nil
}
