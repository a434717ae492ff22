package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/fairness"
	"github.com/lbbench/lbbench/internal/kernel"
	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/poll"
	"github.com/lbbench/lbbench/internal/results"
)

// The connections scenario: a crowd of long-lived keep-alive connections,
// opened all at once and then idle (WebSocket- or push-style clients),
// beside a few active ones at a fixed rate. Where the crowd lands is
// decided once, at accept, and stays: the spread over the workers is the
// model's, counted per connection by the worker that answered its first
// request. Opening them together is a burst of SYNs against one accept
// queue: the kernel's ListenOverflows, ListenDrops and SYN retransmits
// say what the burst cost, and the time until the last one answered.

// Hold is a cell's crowd: Conns connections opened together before the
// load, each answered once, then idle until the cell ends.
type Hold struct{ Conns int }

const (
	// connSizeSmall and connSizeBig are the crowds on a big box; a
	// smaller one gets what its limits allow (connLimit).
	connSizeSmall = 10000
	connSizeBig   = 50000
	// connRate is the active connections' total rate (loadgen -rate).
	connRate = 2000
	// connRounds: rounds of the scenario (each a fresh server per cell),
	// fewer than the matrix's: a cell opens thousands of connections.
	connRounds = 5
	// connSpare is the descriptors kept for what is not the crowd
	// (loadgen's connections, files, the metrics).
	connSpare = 1000
	// connOpenTimeout bounds one connection's connect and first answer;
	// SYN retransmits back off 1, 2, 4 s.
	connOpenTimeout = 20 * time.Second
)

// connBacklog is every server's listen backlog here (nginx's and
// HAProxy's configurations say 4096 too); connShortBacklog the short
// queue some of the target's models are also measured with, the smaller
// crowd only.
const (
	connBacklog      = 4096
	connShortBacklog = 128
)

var connShortModels = []string{"reuseport", "shared-netpoll", "single"}

// connServers are the real servers the scenario holds crowds on (they
// need root: they are attributed by the kernel).
var connServers = []string{"nginx-shared", "nginx-reuseport", "haproxy"}

// connLimit is the largest crowd this machine takes: every descriptor
// the process may have, less a spare, since one worker of a skewed model
// may get all of them, and the bench process holds them all; and the
// local ports of every -src address. It raises RLIMIT_NOFILE's soft
// limit to the hard one, tries a hard limit of what a big crowd needs,
// and says in one line what it could not raise.
func connLimit(srcs int) (limit int, note string) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return connSizeSmall, "connections: RLIMIT_NOFILE unreadable: " + err.Error()
	}
	want := uint64(2*connSizeBig + connSpare)
	if rl.Max < want {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}); err != nil {
			note = fmt.Sprintf("RLIMIT_NOFILE stays %d (raising the hard limit to %d: %v; it needs CAP_SYS_RESOURCE)", rl.Max, want, err)
		}
	}
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) // children inherit it
	}
	limit = int(rl.Cur) - connSpare
	if lo, hi, err := portRange(); err == nil && srcs*(hi-lo+1) < limit {
		limit = srcs * (hi - lo + 1)
		note = strings.TrimPrefix(note+fmt.Sprintf("; %d source addresses x %d local ports", srcs, hi-lo+1), "; ")
	}
	if note != "" && limit < connSizeBig {
		note = fmt.Sprintf("connections: %s: crowds of at most %d, not %d", note, limit, connSizeBig)
	} else {
		note = ""
	}
	return limit, note
}

// portRange is net.ipv4.ip_local_port_range.
func portRange() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range %q", b)
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	return lo, hi, err
}

// connSizes are the crowds: the big box's two, each capped at limit.
func connSizes(limit int) []int {
	return slices.Compact([]int{min(connSizeSmall, limit), min(connSizeBig, limit)})
}

var connMetrics = []results.Metric{
	{Unit: "held-imbalance", Label: "crowd's imbalance (max/mean)", Summary: true},
	{Unit: "hash-imbalance", Label: "uniform hashing expects", Keep: true},
	{Unit: "p99-sec", Label: "p99 of the active ones", Summary: true},
	{Unit: "all-answered-sec", Label: "until every one answered", Summary: true},
	{Unit: "all-connected-sec", Label: "until every one connected"},
	{Unit: "listen-overflows", Label: "ListenOverflows", Keep: true},
	{Unit: "listen-drops", Label: "ListenDrops", Keep: true},
	{Unit: "syn-retrans", Label: "TCPSynRetrans", Keep: true},
	{Unit: "held-failed", Label: "failed to open"},
	{Unit: "server-B/conn", Label: "server RSS per connection (B)"},
}

var connectionsScenario = Scenario{
	Name:   "connections",
	About:  fmt.Sprintf("%d and %d keep-alive connections opened at once and held idle (fewer where the machine's limits say), -c active ones at %d req/s, N workers", connSizeSmall, connSizeBig, connRate),
	Rounds: connRounds,
	Cells: func(p Params) []Cell {
		srcs, _ := load.ParseSrc(p.Src)
		limit, note := connLimit(max(len(srcs), 1))
		if note != "" {
			fmt.Fprintln(os.Stderr, note)
		}
		models := slices.Clone(p.Models)
		if os.Geteuid() == 0 {
			models = append(models, connServers...)
		}
		cell := func(m string, n, backlog int) Cell {
			c := Cell{
				Name:  fmt.Sprintf("Connections/model=%s/conns=%d/backlog=%d/workers=%d", m, n, backlog, p.TargetCPUs),
				Model: m, Workers: p.TargetCPUs, Conn: "keepalive", Duration: p.Duration,
				Rate: connRate, Net: netLoopback, Hold: &Hold{Conns: n},
			}
			if !isServer(m) {
				c.Backlog = backlog
			}
			return c
		}
		var out []Cell
		sizes := connSizes(limit)
		for _, n := range sizes {
			for _, m := range models {
				out = append(out, cell(m, n, connBacklog))
			}
		}
		// A short queue, as a server left at an old default has: what
		// overflowing it costs the crowd.
		for _, m := range connShortModels {
			if slices.Contains(p.Models, m) {
				out = append(out, cell(m, sizes[0], connShortBacklog))
			}
		}
		return out
	},
	Sections: []results.Section{{
		Name: "Connections", Title: "Many idle connections, few active",
		About: fmt.Sprintf("A crowd of keep-alive connections (conns=) opened all at once from several source addresses, each answered once and then idle, "+
			"beside loadgen's -c active connections at %d req/s (open loop) for the sample; N workers. The crowd's imbalance is max/mean of the connections each worker "+
			"answered (HAProxy's threads: the thread its show fd names); uniform hashing's expectation beside it. Kernel counters: their change while the crowd opened. "+
			"RSS: the server's process tree, after the crowd opened minus before, per connection.", connRate),
		Rows:    "/conns@num /backlog@num",
		Metrics: connMetrics,
		Charts:  []results.Chart{{Kind: results.Bars, Unit: "held-imbalance", Label: "crowd's imbalance (max/mean)"}, {Kind: results.Spectrum}},
	}},
}

func init() { scenarios = append(scenarios, connectionsScenario) }

// crowd is a cell's held connections.
type crowd struct {
	fds                 []int
	failed              int
	connected, answered time.Duration // until the last one
	perPID              map[int]int
	delta               map[string]int64
	rssBefore, rssAfter int64
	workers, n          int
	countable           bool
}

// Where a crowd connection is while it opens.
const (
	crowdConnecting = iota
	crowdAsked
	crowdAnswered
)

// openCrowd opens c.Hold.Conns connections to addr as fast as connect(2)
// goes, in one loop on one epoll set (a burst, as a crowd of clients
// reconnecting after a restart is), sends one request on each and reads
// its answer's head (the worker's pid header), then leaves them idle.
func openCrowd(f *matrixFlags, c Cell, addr string, srv server) (*crowd, error) {
	srcs, err := load.ParseSrc(f.Src)
	if err != nil {
		return nil, err
	}
	remote, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	cr := &crowd{perPID: map[int]int{}, workers: c.Workers, n: c.Hold.Conns, countable: fairBy(c.Model) == load.FairProcess}
	root := srv.Pid()
	cr.rssBefore = treeRSS(root)
	set, err := poll.New(1024)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	o := &opening{cr: cr, set: set, state: map[int]int{}, partial: map[int][]byte{}, buf: make([]byte, 4096)}
	before := kernel.Take()
	o.start = time.Now()
	o.dial(remote, srcs)
	o.wait(o.start.Add(connOpenTimeout))
	cr.delta = kernel.Observe(before, kernel.Take()).Delta
	cr.rssAfter = treeRSS(root)
	if h, ok := srv.(threadCounter); ok && len(cr.fds) > 0 {
		// Its threads share a pid: HAProxy says which thread runs each.
		if err := cr.countThreads(h); err != nil {
			cr.close()
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	if len(cr.fds) == 0 {
		return nil, fmt.Errorf("%s: none of %d connections opened", c.Name, cr.n)
	}
	return cr, nil
}

// opening is a crowd while its connections open: where each one is, the
// part of an answer read so far, and the set they wait in.
type opening struct {
	cr      *crowd
	set     *poll.Set
	state   map[int]int
	partial map[int][]byte
	buf     []byte
	start   time.Time
}

var crowdRequest = []byte("GET / HTTP/1.1\r\nHost: lbbench\r\n\r\n")

// dial starts every connection's connect(2) without waiting for any.
func (o *opening) dial(remote netip.AddrPort, srcs []netip.Addr) {
	for i := range o.cr.n {
		fd, err := crowdConnect(remote, srcs, i)
		if err != nil && err != unix.EINPROGRESS {
			if fd >= 0 {
				unix.Close(fd)
			}
			o.cr.failed++
			continue
		}
		if err := o.set.Add(fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
			unix.Close(fd)
			o.cr.failed++
			continue
		}
		o.state[fd] = crowdConnecting
	}
}

// wait steps the connections until all are answered or failed, or the
// deadline passes; the ones left then count as failed.
func (o *opening) wait(deadline time.Time) {
	for len(o.state) > len(o.cr.fds) && time.Now().Before(deadline) {
		k, err := o.set.Block(100)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break
		}
		for _, ev := range o.set.Events[:k] {
			o.step(int(ev.Fd), ev.Events)
		}
	}
	for fd, st := range o.state {
		if st != crowdAnswered {
			o.fail(fd) // not answered within the deadline
		}
	}
}

// step moves one connection on after an event: a finished connect sends
// the request, a readable one reads the answer.
func (o *opening) step(fd int, events uint32) {
	st, ok := o.state[fd]
	if !ok || st == crowdAnswered {
		return
	}
	if st == crowdConnecting {
		if soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); soErr != 0 || events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			o.fail(fd)
			return
		}
		if events&unix.EPOLLOUT == 0 {
			return
		}
		o.cr.connected = max(o.cr.connected, time.Since(o.start))
		if _, err := unix.Write(fd, crowdRequest); err != nil {
			o.fail(fd)
			return
		}
		o.state[fd] = crowdAsked
	}
	o.hear(fd)
}

// hear reads what the server answered so far; a whole head names the
// worker, and the connection leaves the set to idle.
func (o *opening) hear(fd int) {
	for {
		k, err := unix.Read(fd, o.buf)
		if err == unix.EAGAIN {
			return
		}
		if err != nil || k == 0 {
			o.fail(fd)
			return
		}
		o.partial[fd] = append(o.partial[fd], o.buf[:k]...)
		head, _, complete := bytes.Cut(o.partial[fd], []byte("\r\n\r\n"))
		if !complete {
			if len(o.partial[fd]) > 16<<10 {
				o.fail(fd)
				return
			}
			continue
		}
		pid, ok := answerPID(head)
		if !ok {
			o.fail(fd)
			return
		}
		delete(o.partial, fd)
		o.state[fd] = crowdAnswered
		o.set.Del(fd)
		o.cr.fds = append(o.cr.fds, fd)
		o.cr.perPID[pid]++
		o.cr.answered = max(o.cr.answered, time.Since(o.start))
		return
	}
}

func (o *opening) fail(fd int) {
	delete(o.state, fd)
	delete(o.partial, fd)
	unix.Close(fd)
	o.cr.failed++
}

// countThreads replaces the per-pid counts with HAProxy's connections
// per thread, which must be the crowd (loadgen has not started).
func (cr *crowd) countThreads(h threadCounter) error {
	threads, err := h.connectionThreads()
	if err != nil {
		return err
	}
	total := 0
	cr.perPID = map[int]int{}
	for t, k := range threads {
		cr.perPID[t] = k
		total += k
	}
	if total != len(cr.fds) {
		return fmt.Errorf("haproxy runs %d client connections, the crowd holds %d", total, len(cr.fds))
	}
	cr.countable = true
	return nil
}

// crowdConnect starts connection i's connect from the i-th source
// address (in turn). IP_BIND_ADDRESS_NO_PORT picks the local port at
// connect, per destination, rather than at bind from the address's one
// ephemeral range.
func crowdConnect(remote netip.AddrPort, srcs []netip.Addr, i int) (int, error) {
	family := unix.AF_INET
	if remote.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	if len(srcs) > 0 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddrOf(netip.AddrPortFrom(srcs[i%len(srcs)], 0))); err != nil {
			return fd, err
		}
	}
	return fd, unix.Connect(fd, sockaddrOf(remote))
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// answerPID reads a response head: a 200, and its X-Worker-Pid (any
// case: HAProxy sends header names in lower case), 0 when it has none.
func answerPID(head []byte) (pid int, ok bool) {
	lines := strings.Split(string(head), "\r\n")
	if f := strings.Fields(lines[0]); len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") || f[1] != "200" {
		return 0, false
	}
	for _, l := range lines[1:] {
		if k, v, found := strings.Cut(l, ":"); found && strings.EqualFold(strings.TrimSpace(k), "X-Worker-Pid") {
			pid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return pid, true
}

// close resets the crowd's connections (SO_LINGER 0): tens of thousands
// of TIME_WAIT entries would fill the host's table for the cells after.
func (cr *crowd) close() {
	for _, fd := range cr.fds {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
	cr.fds = nil
}

// values are the crowd's figures for the sample's record.
func (cr *crowd) values() []benchfmt.Value {
	zero := func(v float64) float64 { return max(v, 1e-9) } // 0 breaks geomeans
	vals := []benchfmt.Value{
		{Value: zero(cr.answered.Seconds()), Unit: "all-answered-sec"},
		{Value: zero(cr.connected.Seconds()), Unit: "all-connected-sec"},
		{Value: zero(float64(cr.delta["ListenOverflows"])), Unit: "listen-overflows"},
		{Value: zero(float64(cr.delta["ListenDrops"])), Unit: "listen-drops"},
		{Value: zero(float64(cr.delta["TCPSynRetrans"])), Unit: "syn-retrans"},
		{Value: zero(float64(cr.failed)), Unit: "held-failed"},
	}
	if held := cr.n - cr.failed; held > 0 && cr.rssAfter > 0 && cr.rssBefore > 0 {
		vals = append(vals, benchfmt.Value{Value: zero(float64(cr.rssAfter-cr.rssBefore) / float64(held)), Unit: "server-B/conn"})
	}
	if cr.countable {
		counts := make([]float64, 0, cr.workers)
		for _, k := range cr.perPID {
			counts = append(counts, float64(k))
		}
		for len(counts) < cr.workers {
			counts = append(counts, 0) // a worker that got none
		}
		held := cr.n - cr.failed
		// Fewer throws for a big crowd: the expectation is tight there.
		exp, _ := fairness.BallsIntoBins(held, cr.workers, max(100, 20_000_000/max(held, 1)))
		vals = append(vals,
			benchfmt.Value{Value: fairness.Compute(counts).MaxOverMean, Unit: "held-imbalance"},
			benchfmt.Value{Value: exp, Unit: "hash-imbalance"})
	}
	return vals
}

// treeRSS is the resident memory of root and its descendants, in bytes
// (0 when unknown).
func treeRSS(root int) int64 {
	if root == 0 {
		return 0
	}
	pids, err := kernel.Proc.Tree(root)
	if err != nil {
		return 0
	}
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			sum += pages * int64(os.Getpagesize())
		}
	}
	return sum
}

// rounds is how many of count rounds the scenario runs.
func (s Scenario) rounds(count int) int {
	if s.Rounds > 0 {
		return min(s.Rounds, count)
	}
	return count
}
