package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTargetArgs: each of a cell's target settings becomes its flag, after
// the model's, and a zero setting passes none (the target's default).
func TestTargetArgs(t *testing.T) {
	const base = "-addr 127.0.0.1:9 -metrics-addr 127.0.0.1:10 -workers 2"
	for _, tc := range []struct {
		name string
		c    Cell
		tf   tlsFiles
		want string
	}{
		{"model", Cell{Model: "shared-netpoll", Workers: 2},
			tlsFiles{}, base + " -model shared -accept netpoll"},
		{"work and TLS", Cell{Model: "reuseport", Workers: 2, Work: 100 * time.Microsecond},
			tlsFiles{cert: "/t/cert.pem", key: "/t/key.pem"},
			base + " -model reuseport -work 100µs -tls-cert /t/cert.pem -tls-key /t/key.pem"},
		{"backlog", Cell{Model: "single", Workers: 2, Backlog: 128},
			tlsFiles{}, base + " -model single -dispatch rr -backlog 128"},
		{"churn", Cell{Model: "fd-handoff", Workers: 2, RestartEvery: churnEvery},
			tlsFiles{}, base + " -model reuseport -restart fd-handoff -restart-every 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := targetArgs(tc.c, "127.0.0.1:9", "127.0.0.1:10", tc.tf)
			if want := strings.Fields(tc.want); !slices.Equal(got, want) {
				t.Errorf("targetArgs:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLoadgenArgs: every generator of a sample gets its share of the
// connections (the cell's, else -c) or flows and of the rate, and the
// cell's loadgen settings and the sample's certificate become flags.
func TestLoadgenArgs(t *testing.T) {
	f := &matrixFlags{}
	f.Clients, f.Warmup = 50, 300*time.Millisecond
	one := []generator{{src: "127.0.0.2-127.0.0.33"}}
	three := []generator{{src: "10.0.1.2", netns: "c1"}, {src: "10.0.2.2", netns: "c2"}, {src: "10.0.3.2", netns: "c3"}}
	s := sampleLoad{addr: "127.0.0.1:9", metricsAddr: "127.0.0.1:10", rate: 900}
	head := func(d, w, src string, i int, name string) string {
		return fmt.Sprintf("-q -d %s -warmup 300ms -workers %s -src %s -json /j/%d.json -name %s", d, w, src, i, name)
	}
	for _, tc := range []struct {
		name string
		c    Cell
		s    sampleLoad
		gens []generator
		want []string // one argv per generator
	}{
		{"closed loop", Cell{Name: "Accept", Model: "reuseport", Workers: 2, Conn: "keepalive", Duration: time.Second},
			s, one, []string{
				head("1s", "2", "127.0.0.2-127.0.0.33", 0, "Accept") + " -c 50 -conn keepalive -fair-by process http://127.0.0.1:9/",
			}},
		{"churn over three", Cell{Name: "Churn", Model: "fd-handoff", Workers: 2, Conn: "close", Duration: 3 * time.Second,
			Clients: 300, Timeout: 2 * time.Second, Rate: churnRate, Restarts: true},
			sampleLoad{addr: s.addr, metricsAddr: s.metricsAddr, rate: s.rate, startAt: "T0"}, three, []string{
				head("3s", "2", "10.0.1.2", 0, "Churn") + " -c 100 -conn close -fair-by process -rate 1000 -restarts http://127.0.0.1:10/restarts -start-at T0 -netns c1 -timeout 2s http://127.0.0.1:9/",
				head("3s", "2", "10.0.2.2", 1, "Churn") + " -c 100 -conn close -fair-by process -rate 1000 -restarts http://127.0.0.1:10/restarts -start-at T0 -netns c2 -timeout 2s http://127.0.0.1:9/",
				head("3s", "2", "10.0.3.2", 2, "Churn") + " -c 100 -conn close -fair-by process -rate 1000 -restarts http://127.0.0.1:10/restarts -start-at T0 -netns c3 -timeout 2s http://127.0.0.1:9/",
			}},
		{"open loop at the calibrated rate", Cell{Name: "OpenLoop", Model: "inproc-shared", Workers: 2, Conn: "close", Duration: 2 * time.Second,
			RateFraction: openFraction, Poisson: true, Clients: 500, Kernel: true},
			sampleLoad{addr: s.addr, rate: 1000, startAt: "T0"}, three, []string{
				head("2s", "2", "10.0.1.2", 0, "OpenLoop") + " -c 167 -conn close -fair-by worker -attribute both -rate 333 -start-at T0 -netns c1 -poisson http://127.0.0.1:9/",
				head("2s", "2", "10.0.2.2", 1, "OpenLoop") + " -c 167 -conn close -fair-by worker -attribute both -rate 333 -start-at T0 -netns c2 -poisson http://127.0.0.1:9/",
				head("2s", "2", "10.0.3.2", 2, "OpenLoop") + " -c 166 -conn close -fair-by worker -attribute both -rate 333 -start-at T0 -netns c3 -poisson http://127.0.0.1:9/",
			}},
		{"TLS resumed", Cell{Name: "TLS", Model: "reuseport", Workers: 2, Conn: "close", Duration: time.Second, TLS: true, TLSResume: true},
			sampleLoad{addr: s.addr, cacert: "/t/cert.pem"}, one, []string{
				head("1s", "2", "127.0.0.2-127.0.0.33", 0, "TLS") + " -c 50 -conn close -fair-by process -tls-resume -cacert /t/cert.pem https://127.0.0.1:9/",
			}},
		{"UDP flows", Cell{Name: "UDPRebind", Model: "udp-reuseport", Workers: 4, Duration: time.Second,
			Flows: 17, RebindEvery: udpRebindEvery, Rate: udpRebindRate},
			s, three[:2], []string{
				head("1s", "4", "10.0.1.2", 0, "UDPRebind") + " -flows 9 -rebind-every 200ms -rate 2500 -netns c1 udp://127.0.0.1:9",
				head("1s", "4", "10.0.2.2", 1, "UDPRebind") + " -flows 8 -rebind-every 200ms -rate 2500 -netns c2 udp://127.0.0.1:9",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, w := range tc.want {
				got := loadgenArgs(f, tc.c, tc.s, tc.gens, i, fmt.Sprintf("/j/%d.json", i))
				if want := strings.Fields(w); !slices.Equal(got, want) {
					t.Errorf("generator %d:\n got %q\nwant %q", i, got, want)
				}
			}
		})
	}
}
