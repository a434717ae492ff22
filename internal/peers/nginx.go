package peers

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Nginx is a running nginx with a private prefix directory.
type Nginx struct {
	Addr      string
	Dir       string
	AccessLog string // "" when access logging is off
	d         *daemon
}

// NginxOptions configure StartNginx.
type NginxOptions struct {
	// NetNS, if set, is the network namespace to run in (netpath's).
	NetNS   string
	Addr    string // HOST:PORT
	Workers int
	// How workers accept: ReusePort gives each its own socket (listen ...
	// reuseport); otherwise they share one, woken one at a time with
	// EPOLLEXCLUSIVE (accept_mutex off, nginx's default since 1.11.3),
	// or taking turns holding a lock (AcceptMutex).
	ReusePort, AcceptMutex bool
	// AccessLog logs "$pid $connection $status" per request, the ground
	// truth of which worker served which connection; LogFormat replaces
	// that format (e.g. "combined", nginx's default).
	AccessLog bool
	LogFormat string
	// Work, if set, burns this much CPU per request in a Lua handler
	// (Debian's libnginx-mod-http-lua), which answers with a chunked body.
	Work time.Duration
	// CPUs, if set, pins nginx (master and workers) to these CPUs.
	CPUs []int
	// CertFile and KeyFile, if set, make the listener terminate TLS
	// (1.2 and 1.3; session tickets on, nginx's default, so clients can
	// resume); the access log then adds $ssl_session_reused.
	CertFile, KeyFile string
	// KTLS asks OpenSSL to hand the record layer to the kernel after each
	// handshake (ssl_conf_command Options KTLS), so sendfile and writes
	// are encrypted in the kernel. OpenSSL falls back to user space
	// without a word when the kernel has no TLS: read kernel.KernelTLS's
	// counters to know whether it was used.
	KTLS bool
	// Files, if set, is a folder served under /files/ with sendfile on.
	Files string
	// Connections is each worker's worker_connections (0: 16384); above
	// the default it also sets worker_rlimit_nofile to twice it, or to
	// the hard RLIMIT_NOFILE if that is lower.
	Connections int
}

// luaModules are Debian's paths of the modules the Lua handler needs.
var luaModules = []string{
	"/usr/lib/nginx/modules/ndk_http_module.so",
	"/usr/lib/nginx/modules/ngx_http_lua_module.so",
}

// StartNginx writes a config that answers every request with 200 "ok" and
// an X-Worker-Pid header, starts nginx in the foreground, and waits until
// it accepts connections.
func StartNginx(o NginxOptions) (*Nginx, error) {
	d, err := newDaemon("nginx")
	if err != nil {
		return nil, err
	}
	n := &Nginx{Addr: o.Addr, Dir: d.dir, d: d}
	if o.AccessLog {
		n.AccessLog = filepath.Join(d.dir, "access.log")
	}
	conf, err := o.conf(d.dir, n.AccessLog)
	if err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	confPath := filepath.Join(d.dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	if err := d.start(launch{netns: o.NetNS, cpus: o.CPUs, addr: o.Addr, errLog: "error.log", argv: []string{"nginx", "-c", confPath, "-p", d.dir}}); err != nil {
		return nil, err
	}
	return n, nil
}

// conf is nginx.conf for these options, with its files in dir and the
// access log, unless "", at accessLog.
func (o NginxOptions) conf(dir, accessLog string) (string, error) {
	head, conns, err := o.head()
	if err != nil {
		return "", err
	}
	listen, tls, tlsLog := o.tls()
	files := ""
	if o.Files != "" {
		files = fmt.Sprintf("location /files/ {\n      alias %s/;\n      sendfile on;\n    }", o.Files)
	}
	logLine := "access_log off;"
	if accessLog != "" {
		logLine = "log_format lb '$pid $connection $status" + tlsLog + "';\n  access_log " + accessLog + " lb;"
		if o.LogFormat != "" {
			logLine = "access_log " + accessLog + " " + o.LogFormat + ";"
		}
	}
	handler := `return 200 "ok\n";`
	if o.Work > 0 {
		handler = fmt.Sprintf(luaBurn, o.Work.Microseconds())
	}
	mutex := "off"
	if o.AcceptMutex {
		mutex = "on"
	}
	return fmt.Sprintf(`%s
worker_processes %d;
daemon off;
master_process on;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log;
events {
  worker_connections %[10]d;
  accept_mutex %[4]s;
}
http {
  %[5]s
  keepalive_requests 1000000;
  %[8]s
  client_body_temp_path %[3]s;
  proxy_temp_path %[3]s;
  fastcgi_temp_path %[3]s;
  uwsgi_temp_path %[3]s;
  scgi_temp_path %[3]s;
  server {
    listen %[6]s backlog=4096;
    location / {
      add_header X-Worker-Pid $pid;
      %[7]s
    }
    %[9]s
  }
}
`, strings.Join(head, "\n"), o.Workers, dir, mutex, logLine, listen, handler, tls, files, conns), nil
}

// head is the main context's directives (the user, the Lua modules of a
// CPU-heavy handler, the descriptor limit) and worker_connections.
func (o NginxOptions) head() ([]string, int, error) {
	var head []string
	if os.Geteuid() == 0 {
		head = append(head, "user root;") // the prefix directory is root's
	}
	if o.Work > 0 {
		for _, m := range luaModules {
			if _, err := os.Stat(m); err != nil {
				return nil, 0, fmt.Errorf("nginx: %s missing: run make setup (it installs Debian's libnginx-mod-http-lua)", m)
			}
			head = append(head, "load_module "+m+";")
		}
	}
	conns := 16384
	if o.Connections > conns {
		conns = o.Connections
		nofile := uint64(2 * conns)
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
			nofile = min(nofile, rl.Max)
		}
		head = append(head, fmt.Sprintf("worker_rlimit_nofile %d;", nofile))
	}
	return head, conns, nil
}

// tls is the listen directive's address and flags, the TLS directives
// and what the access log adds under TLS (whether the session resumed).
func (o NginxOptions) tls() (listen, tls, tlsLog string) {
	listen = o.Addr
	if o.ReusePort {
		listen += " reuseport"
	}
	if o.CertFile == "" {
		return listen, "", ""
	}
	listen += " ssl"
	// Debian's nginx 1.22 offers TLS 1.3 only when ssl_protocols names it.
	tls = fmt.Sprintf("ssl_certificate %s;\n  ssl_certificate_key %s;\n  ssl_protocols TLSv1.2 TLSv1.3;", o.CertFile, o.KeyFile)
	if o.KTLS {
		tls += "\n  ssl_conf_command Options KTLS;"
	}
	return listen, tls, " $ssl_session_reused"
}

// luaBurn spins on CLOCK_MONOTONIC, read through LuaJIT's FFI (ngx.now
// has millisecond resolution), for the given microseconds, then answers.
const luaBurn = `content_by_lua_block {
        local ffi = require "ffi"
        if not pcall(ffi.typeof, "lbbench_timespec") then
          ffi.cdef[[
            typedef struct { long tv_sec; long tv_nsec; } lbbench_timespec;
            int clock_gettime(int clk, lbbench_timespec *tp);
          ]]
        end
        local ts = ffi.new("lbbench_timespec")
        local function ns() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec) end
        local stop = ns() + %d * 1000
        repeat until ns() >= stop
        ngx.say("ok")
      }`

// Stop stops nginx (SIGQUIT: graceful) and removes its directory.
func (n *Nginx) Stop() error { return n.d.stop(unix.SIGQUIT) }

// Pid is the master's pid.
func (n *Nginx) Pid() int { return n.d.pid() }

// Workers are the worker processes' pids.
func (n *Nginx) Workers() []int { return n.d.children() }

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

// SessionReuse reads a TLS access log's $ssl_session_reused: requests
// on resumed sessions ("r") and on full handshakes (".").
func (n *Nginx) SessionReuse() (resumed, full int, err error) {
	f, err := os.Open(n.AccessLog)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 {
			continue
		}
		switch fl[3] {
		case "r":
			resumed++
		case ".":
			full++
		}
	}
	return resumed, full, sc.Err()
}
