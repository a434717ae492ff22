// Package load is the load engine of cmd/loadgen: closed-loop connections
// or an open-loop schedule, connection-per-request or keep-alive, with
// latencies in HDR histograms and every response attributed to the worker
// pid the server names in a header.
package load

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lbbench/lbbench/internal/variant"
)

// Connection modes.
const (
	ModeKeepAlive = "keepalive"
	ModeClose     = "close"
)

// Modes lists the connection modes.
var Modes = variant.List{ModeKeepAlive, ModeClose}

// Options configure one run. Zero values mean the documented defaults
// where there is one.
type Options struct {
	// URL is the target, http://HOST:PORT/PATH with an IP host.
	URL string
	// Conns is the number of connections (closed loop), or the size of
	// the pool that serves the schedule (open loop).
	Conns int
	// Rate > 0 selects the open loop: requests per second, sent at their
	// intended times whatever the server does.
	Rate float64
	// Poisson spaces open-loop arrivals exponentially instead of evenly.
	Poisson bool
	// Duration and/or Requests bound the measured part of the run.
	Duration time.Duration
	Requests int64
	// Warmup runs before measuring; its results are dropped.
	Warmup time.Duration
	// Mode is ModeKeepAlive or ModeClose (a new connection per request).
	Mode string
	// ReqsPerConn closes a keep-alive connection after this many requests
	// (0: never).
	ReqsPerConn int
	// Src are the local addresses connections are made from, in turn.
	Src []netip.Addr
	// PIDHeader and IDHeader name the response headers that say which
	// worker process served a request.
	PIDHeader, IDHeader string
	// Timeout bounds connect and each request.
	Timeout time.Duration
	// Seed seeds Poisson arrivals (0: from the clock).
	Seed int64
	// Attribute is AttrHeader (default), AttrKernel or AttrBoth; the
	// kernel modes need Kernel, which names each connection's acceptor,
	// or Serving, which names who served each response, or both. With
	// Serving they count who served (and, with Kernel too, who accepted
	// each connection and handed it to whom); with Kernel alone, who
	// accepted.
	Attribute string
	Kernel    Acceptors `json:"-"`
	Serving   Servers   `json:"-"`
	// NetNS, if set, is the network namespace (a name under
	// /var/run/netns, or a path) the load's sockets are opened in.
	NetNS string
	// FairBy is what the fairness figures count as a worker: FairProcess
	// (default), FairThread (the serving thread, or the accepting one without Serving; kernel attribution) or
	// FairWorker (the X-Worker-Id the server sends; in-process workers).
	FairBy string
	// Proto is ProtoTCP (HTTP, the default) or ProtoUDP (request/reply
	// datagrams to udp://HOST:PORT, udp_linux.go). UDP runs Flows flows,
	// each its own socket and source port, in the open loop at Rate
	// datagrams per second, or in the closed loop with Window datagrams
	// in flight per flow; RebindEvery > 0 gives every flow a new source
	// port that often, as a NAT rebinding would.
	Proto       string
	Flows       int
	Window      int
	RebindEvery time.Duration
	// Observe, if set, is called with the latency in seconds of every
	// measured successful request (live metrics); it must be safe for
	// concurrent use.
	Observe func(seconds float64) `json:"-"`
	// TLS configures https:// runs (tls_options.go).
	TLS TLSOptions

	host, port, path string
}

// Protocols.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// Protos lists the protocols.
var Protos = variant.List{ProtoTCP, ProtoUDP}

// maxFlows bounds -flows: each flow holds a socket and a source port.
const maxFlows = 100000

// minRebindEvery bounds -rebind-every from below: a rebinding opens and
// closes a socket per flow, and below a few milliseconds the run measures
// socket churn rather than a NAT's port changes.
const minRebindEvery = 10 * time.Millisecond

// fdReserve are the descriptors a UDP run needs besides its flows'
// sockets (epoll sets, wake-ups, metrics, output files, Go's own).
const fdReserve = 64

// Validate checks o and fills in defaults.
func (o *Options) Validate() error {
	u, err := url.Parse(o.URL)
	if err == nil && u.Scheme == "udp" && o.Proto == "" {
		o.Proto = ProtoUDP
	}
	if o.Proto == "" {
		o.Proto = ProtoTCP
	}
	switch {
	case !Protos.Has(o.Proto):
		return fmt.Errorf("-proto %q: want %s", o.Proto, Protos.Words())
	case o.Proto == ProtoUDP && (err != nil || u.Scheme != "udp" || u.Host == ""):
		return fmt.Errorf("bad URL %q: -proto udp wants udp://HOST:PORT", o.URL)
	case o.Proto == ProtoTCP && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == ""):
		return fmt.Errorf("bad URL %q: want http://HOST:PORT/PATH or https://HOST:PORT/PATH", o.URL)
	case o.Proto == ProtoUDP && u.Port() == "":
		return fmt.Errorf("bad URL %q: -proto udp wants udp://HOST:PORT (datagrams have no default port)", o.URL)
	}
	if o.Proto == ProtoUDP {
		if err := o.validateUDP(); err != nil {
			return err
		}
	}
	if err := o.validateTLS(u.Scheme); err != nil {
		return err
	}
	ip, err := o.setTarget(u)
	if err != nil {
		return err
	}
	if err := o.validateLoad(); err != nil {
		return err
	}
	o.setDefaults()
	for _, s := range o.Src {
		if s.Is4() != ip.Is4() {
			return fmt.Errorf("-src %v and the target %v are not the same IP family", s, ip)
		}
	}
	return nil
}

// setTarget takes the target's address, port and path from u.
func (o *Options) setTarget(u *url.URL) (netip.Addr, error) {
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ip, fmt.Errorf("bad URL %q: host must be an IP address", o.URL)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if o.TLS.Enabled {
			port = "443"
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return ip, fmt.Errorf("bad URL %q: bad port", o.URL)
	}
	o.host, o.port = netip.AddrPortFrom(ip, 0).Addr().String(), port
	if ip.Is6() {
		o.host = "[" + o.host + "]"
	}
	o.path = u.RequestURI()
	return ip, nil
}

// validateLoad checks the load's size, pacing, connections and
// attribution.
func (o *Options) validateLoad() error {
	switch {
	case o.Proto == ProtoTCP && o.Conns < 1:
		return fmt.Errorf("-c %d: want at least 1 connection", o.Conns)
	case o.Proto == ProtoTCP && o.Conns > 100000:
		return fmt.Errorf("-c %d: at most 100000", o.Conns)
	case math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("-rate %v: want a finite number of requests per second", o.Rate)
	case o.Rate < 0:
		return fmt.Errorf("-rate %v: must not be negative", o.Rate)
	case o.Rate > 10e6:
		return fmt.Errorf("-rate %v: at most 10000000 per second", o.Rate)
	case o.Duration < 0 || o.Warmup < 0 || o.Timeout < 0:
		return errors.New("-d, -warmup and -timeout must not be negative")
	case o.Requests < 0:
		return fmt.Errorf("-n %d: must not be negative", o.Requests)
	case o.Duration == 0 && o.Requests == 0:
		return errors.New("give -d DURATION or -n COUNT (a run must stop by itself)")
	case o.Proto == ProtoTCP && !Modes.Has(o.Mode):
		return fmt.Errorf("-conn %q: want %s", o.Mode, Modes.Words())
	case o.ReqsPerConn < 0:
		return fmt.Errorf("-reqs-per-conn %d: must not be negative", o.ReqsPerConn)
	case o.ReqsPerConn > 0 && o.Mode == ModeClose:
		return errors.New("-reqs-per-conn goes with -conn keepalive")
	case o.Attribute != "" && !Attributions.Has(o.Attribute):
		return fmt.Errorf("-attribute %q: want %s", o.Attribute, Attributions.Words())
	case o.FairBy != "" && !FairBys.Has(o.FairBy):
		return fmt.Errorf("-fair-by %q: want %s", o.FairBy, FairBys.Words())
	case o.FairBy == FairThread && (o.Attribute == "" || o.Attribute == AttrHeader):
		return errors.New("-fair-by thread needs -attribute kernel or both (threads are the kernel's)")
	case o.FairBy == FairWorker && o.Attribute == AttrKernel:
		return errors.New("-fair-by worker counts the server's -id-header: it needs -attribute header or both")
	}
	return nil
}

// setDefaults fills in what was left zero.
func (o *Options) setDefaults() {
	if o.Attribute == "" {
		o.Attribute = AttrHeader
	}
	if o.FairBy == "" {
		o.FairBy = FairProcess
	}
	if o.PIDHeader == "" {
		o.PIDHeader = "X-Worker-Pid"
	}
	if o.IDHeader == "" {
		o.IDHeader = "X-Worker-Id"
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano()
	}
}

// validateUDP checks what only UDP has, and refuses what only TCP has.
func (o *Options) validateUDP() error {
	switch {
	case o.Flows < 1 || o.Flows > maxFlows:
		return fmt.Errorf("-flows %d: want 1 to %d (each flow is a socket and a source port)", o.Flows, maxFlows)
	case o.Flows > 28000*max(1, len(o.Src)):
		return fmt.Errorf("-flows %d: more than the ephemeral ports of %d source address(es) (about 28000 each): add -src addresses", o.Flows, max(1, len(o.Src)))
	case o.Mode == ModeClose || o.ReqsPerConn > 0:
		return errors.New("-proto udp has no connections: -conn and -reqs-per-conn are TCP's")
	case o.Attribute != "" && o.Attribute != AttrHeader:
		return errors.New("-proto udp: the worker is named in every reply; -attribute kernel follows TCP accepts")
	case o.Window < 0 || (o.Rate > 0 && o.Window > 0):
		return errors.New("-window is the closed loop's datagrams in flight per flow: not with -rate, not negative")
	case o.RebindEvery < 0:
		return errors.New("-rebind-every must not be negative")
	case o.RebindEvery > 0 && o.RebindEvery < minRebindEvery:
		return fmt.Errorf("-rebind-every %v: at least %v (each rebinding opens a new socket for every flow)", o.RebindEvery, minRebindEvery)
	case o.FairBy == FairThread:
		return errors.New("-fair-by thread counts the threads that accept TCP connections: -proto udp counts process or worker")
	}
	// Each flow holds a socket, two while a rebinding keeps the old one
	// for late replies: with too few descriptors the flows past the limit
	// would fail to open one by one, and the run measure fewer flows than
	// it says.
	need := o.Flows + fdReserve
	if o.RebindEvery > 0 {
		need += o.Flows
	}
	if limit := openFileLimit(); limit > 0 && uint64(need) > limit {
		return fmt.Errorf("-flows %d: needs about %d file descriptors and the limit (ulimit -n) is %d: run fewer flows, or several loadgen processes", o.Flows, need, limit)
	}
	if o.Rate == 0 && o.Window == 0 {
		o.Window = 1
	}
	o.Mode = ""
	return nil
}

// Addr is the target's HOST:PORT.
func (o *Options) Addr() string { return o.host + ":" + o.port }

// ParseSrc parses a -src value: comma-separated addresses or ranges
// "127.0.0.2-127.0.0.20".
func ParseSrc(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("-src %q: %q is not an IP address", s, lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(hi)
		if err != nil {
			return nil, fmt.Errorf("-src %q: %q is not an IP address", s, hi)
		}
		if a.Is4() != b.Is4() || b.Less(a) {
			return nil, fmt.Errorf("-src %q: range must go up within one IP family", s)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if len(out) > 65536 {
				return nil, fmt.Errorf("-src %q: more than 65536 addresses", s)
			}
			if x == b {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-src %q: no addresses", s)
	}
	return out, nil
}
