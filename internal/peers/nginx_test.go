package peers

import (
	"strings"
	"testing"
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
