package peers

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The configuration says what the options ask for; nginx itself checks
// it in the process-level tests (bench, cmd/loadgen).
func TestNginxConf(t *testing.T) {
	for _, c := range []struct {
		name string
		o    NginxOptions
		log  string
		want []string
		not  []string
	}{
		{"plain", NginxOptions{Addr: "127.0.0.1:8080", Workers: 2}, "",
			[]string{"worker_processes 2;", "listen 127.0.0.1:8080 backlog=4096;", "access_log off;", "accept_mutex off;", "worker_connections 16384;"},
			[]string{"ssl", "reuseport", "worker_rlimit_nofile"}},
		{"reuseport tls", NginxOptions{Addr: "127.0.0.1:8443", Workers: 4, ReusePort: true, CertFile: "/c.pem", KeyFile: "/k.pem"}, "/d/access.log",
			[]string{"listen 127.0.0.1:8443 reuseport ssl backlog=4096;", "ssl_certificate /c.pem;", "ssl_certificate_key /k.pem;",
				"ssl_protocols TLSv1.2 TLSv1.3;", "log_format lb '$pid $connection $status $ssl_session_reused';", "access_log /d/access.log lb;"},
			[]string{"KTLS"}},
		{"mutex and a crowd", NginxOptions{Addr: "127.0.0.1:80", Workers: 1, AcceptMutex: true, Connections: 40000}, "/d/a.log",
			[]string{"accept_mutex on;", "worker_connections 40000;", "worker_rlimit_nofile ", "log_format lb '$pid $connection $status';"},
			nil},
	} {
		conf, err := c.o.conf("/d", c.log)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(conf, w) {
				t.Errorf("%s: no %q in\n%s", c.name, w, conf)
			}
		}
		for _, w := range c.not {
			if strings.Contains(conf, w) {
				t.Errorf("%s: %q in\n%s", c.name, w, conf)
			}
		}
	}
}

func TestHAProxyConf(t *testing.T) {
	dir := t.TempDir()
	cert, key := dir+"/c.pem", dir+"/k.pem"
	os.WriteFile(cert, []byte("CERT\n"), 0o600)
	os.WriteFile(key, []byte("KEY\n"), 0o600)
	conf, files, err := HAProxyOptions{Addr: "127.0.0.1:8443", Threads: 4, Shards: true, Log: true, CertFile: cert, KeyFile: key, MaxConn: 20000}.conf("/d")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"nbthread 4", "maxconn 20000", "bind 127.0.0.1:8443 backlog 4096 ssl crt /d/tls.pem shards by-thread",
		`log-format "%[thread] %ci:%cp %[ssl_fc_is_resumed]"`, `hdr X-Worker-Pid "%pid"`} {
		if !strings.Contains(conf, w) {
			t.Errorf("no %q in\n%s", w, conf)
		}
	}
	if string(files["tls.pem"]) != "CERT\nKEY\n" {
		t.Errorf("tls.pem %q", files["tls.pem"])
	}
	conf, files, err = HAProxyOptions{Addr: "127.0.0.1:80", Threads: 2, SingleQueue: true, Work: 100 * time.Microsecond}.conf("/d")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"maxconn 8000", "tune.listener.multi-queue off", "lua-load-per-thread /d/burn.lua", "use-service lua.burn"} {
		if !strings.Contains(conf, w) {
			t.Errorf("no %q in\n%s", w, conf)
		}
	}
	if strings.Contains(conf, "ssl") || strings.Contains(conf, "shards") || files["burn.lua"] == nil {
		t.Errorf("plain, one socket, CPU-heavy: files %v\n%s", slices.Collect(maps.Keys(files)), conf)
	}
	if _, _, err := (HAProxyOptions{Addr: "127.0.0.1:1", CertFile: dir + "/missing.pem", KeyFile: key}).conf("/d"); err == nil {
		t.Error("a missing certificate was taken")
	}
}

func TestForkedCommand(t *testing.T) {
	o := ForkedOptions{Kind: GunicornReusePort, Addr: "127.0.0.1:9000", Workers: 3, Work: 50 * time.Microsecond}
	env, args := forkedCommand(o, "/apps", "127.0.0.1", "9000", "/d/access.log")
	for _, w := range []string{"LBBENCH_WORKERS=3", "LBBENCH_WORK_US=50", "PYTHONPATH=/apps"} {
		if !slices.Contains(env, w) {
			t.Errorf("gunicorn env %v: no %s", env, w)
		}
	}
	if a := strings.Join(args, " "); !strings.Contains(a, "-w 3 -b 127.0.0.1:9000") || !strings.Contains(a, "--reuse-port") ||
		!strings.Contains(a, "--access-logfile /d/access.log --access-logformat %(p)s") || args[len(args)-1] != "lbbench_app:wsgi" {
		t.Errorf("gunicorn args %q", a)
	}
	env, args = forkedCommand(ForkedOptions{Kind: NodeNone, Addr: "127.0.0.1:9000", Workers: 2}, "/apps", "127.0.0.1", "9000", "/d/pids.log")
	if !slices.Contains(env, "NODE_CLUSTER_SCHED_POLICY=none") || !slices.Contains(env, "LBBENCH_LOG=/d/pids.log") || args[0] != "/apps/node-cluster.js" {
		t.Errorf("node: env %v args %v", env, args)
	}
	_, args = forkedCommand(ForkedOptions{Kind: Uvicorn, Addr: "[::1]:9000", Workers: 2}, "/apps", "[::1]", "9000", "")
	if a := strings.Join(args, " "); !strings.Contains(a, "--workers 2 --host ::1 --port 9000") {
		t.Errorf("uvicorn args %q", a)
	}
}
