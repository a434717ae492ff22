// Package netpath builds a real network path on one machine: the target
// in a network namespace of its own, K client namespaces joined to it by
// veth pairs, and receive steering on the target side as a multiqueue NIC
// would do it. On loopback a packet "arrives" on the CPU of the process
// that sent it; here, with RSS emulation on, the target side spreads
// flows over CPUs by their hash (RPS on every receive queue, all CPUs),
// optionally with RFS (the flow follows the CPU its socket is read on)
// and XPS (transmit queue i for CPU i).
//
// Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544):
// client i is 198.18.i.2 (with -src addresses 198.18.i.10 to .41) on a
// /24 with the target's 198.18.i.1; the service address every client
// reaches is 198.19.0.1 on the target's loopback, routed through each
// client's link; a management link from the host's own namespace
// (198.18.255.0/24) makes the service address reachable from it too, for
// readiness checks and metrics. Links and namespaces are made with
// netlink (vishvananda/netlink, netns), never by running ip(8).
//
// Everything is torn down by Down; a topology left by a killed run (its
// namespaces name a pid that is gone) is removed by the next Up, which
// also restores the global RFS table size it changed.
package netpath

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options say what to build.
type Options struct {
	Clients int // client namespaces (default 2)
	Queues  int // receive and transmit queues on the target's links (default: one per CPU)
	// RSS spreads received flows over every CPU by their hash (RPS on
	// every receive queue); off, a packet is processed on the CPU that
	// sent it, as on loopback.
	RSS bool
	// RFS steers a flow to the CPU its socket was last read on
	// (rps_sock_flow_entries, rps_flow_cnt); XPS maps CPU i to transmit
	// queue i. Both need RSS.
	RFS, XPS bool
}

// Client is one client namespace.
type Client struct {
	NS   string     // namespace name
	Addr netip.Addr // its primary address
	// Src are its -src addresses, as a loadgen range.
	Src string
}

// Topology is a built path.
type Topology struct {
	Opts Options
	// Target is the target's namespace; Service the address every
	// client (and the host) reaches it at.
	Target  string
	Service netip.Addr
	Clients []Client
	prefix  string
	rfsWas  string // the host's rps_sock_flow_entries before Up
}

// Names and addresses.
const (
	nsPrefix   = "lbb-"
	statePath  = "/run/lbbench" // what a killed run must have restored
	rfsSysctl  = "/proc/sys/net/core/rps_sock_flow_entries"
	rfsEntries = 32768
	// flowCnt is rps_flow_cnt per receive queue with RFS on.
	flowCnt  = 4096
	srcCount = 32
)

var (
	ServiceAddr = netip.MustParseAddr("198.19.0.1")
	mgmtHost    = netip.MustParsePrefix("198.18.255.2/24")
	mgmtTarget  = netip.MustParsePrefix("198.18.255.1/24")
)

// ErrNoPrivilege says what is missing without root.
var ErrNoPrivilege = errors.New("the network path needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN: namespaces, links, sysfs)")

// Up cleans what a killed run left, then builds the path. On failure
// nothing of it is left.
func Up(o Options) (_ *Topology, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNoPrivilege
	}
	if o.Clients == 0 {
		o.Clients = 2
	}
	if o.Queues == 0 {
		o.Queues = runtime.NumCPU()
	}
	switch {
	case o.Clients < 1 || o.Clients > 200:
		return nil, fmt.Errorf("-clients %d: want 1 to 200", o.Clients)
	case o.Queues < 1 || o.Queues > 256:
		return nil, fmt.Errorf("queues %d: want 1 to 256", o.Queues)
	case (o.RFS || o.XPS) && !o.RSS:
		return nil, errors.New("RFS and XPS steer what RSS spread: turn RSS on too")
	}
	if _, err := CleanStale(); err != nil {
		return nil, err
	}
	prefix := nsPrefix + strconv.Itoa(os.Getpid()) + "-"
	t := &Topology{Opts: o, Target: prefix + "target", Service: ServiceAddr, prefix: prefix}
	defer func() {
		if err != nil {
			t.Down()
		}
	}()
	if err := t.build(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Topology) build() error {
	target, err := newNamed(t.Target)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", t.Target, err)
	}
	defer target.Close()
	th, err := netlink.NewHandleAt(target)
	if err != nil {
		return err
	}
	defer th.Close()
	lo, err := th.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := th.LinkSetUp(lo); err != nil {
		return err
	}
	if err := th.AddrAdd(lo, addr(netip.PrefixFrom(t.Service, 32))); err != nil {
		return fmt.Errorf("service address: %w", err)
	}

	// The management link, from the host's namespace.
	mg := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lbbmgmt", Namespace: netlink.NsFd(target)}, PeerName: t.mgmtName()}
	if err := netlink.LinkAdd(mg); err != nil {
		return fmt.Errorf("management link: %w", err)
	}
	hl, err := netlink.LinkByName(t.mgmtName())
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(hl, addr(mgmtHost)); err != nil {
		return fmt.Errorf("management address: %w", err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return err
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: ipnet(netip.PrefixFrom(t.Service, 32)), Gw: net.IP(mgmtTarget.Addr().AsSlice())}); err != nil {
		return fmt.Errorf("route to the service address: %w", err)
	}
	tm, err := th.LinkByName("lbbmgmt")
	if err != nil {
		return err
	}
	if err := th.AddrAdd(tm, addr(mgmtTarget)); err != nil {
		return err
	}
	if err := th.LinkSetUp(tm); err != nil {
		return err
	}

	for i := range t.Opts.Clients {
		if err := t.addClient(th, target, i); err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
	}
	return t.steer()
}

func (t *Topology) mgmtName() string { return "lbbm" + strconv.Itoa(os.Getpid()%1_000_000_000) }

// addClient makes client namespace i and its link to the target.
func (t *Topology) addClient(th *netlink.Handle, target netns.NsHandle, i int) error {
	name := t.prefix + "c" + strconv.Itoa(i)
	cns, err := newNamed(name)
	if err != nil {
		return err
	}
	defer cns.Close()
	c := Client{NS: name, Addr: netip.AddrFrom4([4]byte{198, 18, byte(i), 2}),
		Src: fmt.Sprintf("198.18.%d.10-198.18.%d.%d", i, i, 10+srcCount-1)}
	t.Clients = append(t.Clients, c)
	q := t.Opts.Queues
	if !t.Opts.RSS {
		q = 1
	}
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "lbbt" + strconv.Itoa(i), NumTxQueues: q, NumRxQueues: q},
		PeerName:  "lbbc" + strconv.Itoa(i), PeerNamespace: netlink.NsFd(cns),
		PeerNumTxQueues: uint32(q), PeerNumRxQueues: uint32(q),
	}
	if err := th.LinkAdd(v); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	tl, err := th.LinkByName(v.Name)
	if err != nil {
		return err
	}
	if err := th.AddrAdd(tl, addr(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}), 24))); err != nil {
		return err
	}
	if err := th.LinkSetUp(tl); err != nil {
		return err
	}
	ch, err := netlink.NewHandleAt(cns)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := up(ch); err != nil {
		return err
	}
	cl, err := ch.LinkByName(v.PeerName)
	if err != nil {
		return err
	}
	if err := ch.AddrAdd(cl, addr(netip.PrefixFrom(c.Addr, 24))); err != nil {
		return err
	}
	for k := range srcCount {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i), byte(10 + k)})
		if err := ch.AddrAdd(cl, addr(netip.PrefixFrom(a, 24))); err != nil {
			return fmt.Errorf("source address %v: %w", a, err)
		}
	}
	if err := ch.LinkSetUp(cl); err != nil {
		return err
	}
	gw := netip.AddrFrom4([4]byte{198, 18, byte(i), 1})
	return ch.RouteAdd(&netlink.Route{LinkIndex: cl.Attrs().Index, Dst: ipnet(netip.PrefixFrom(t.Service, 32)), Gw: net.IP(gw.AsSlice())})
}

// up brings up a namespace's loopback.
func up(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

// SetSteering turns RFS and XPS on or off on a built path (RSS must be
// on for either), so that one run can compare them.
func (t *Topology) SetSteering(rfs, xps bool) error {
	if (rfs || xps) && !t.Opts.RSS {
		return errors.New("RFS and XPS steer what RSS spread: build the path with RSS on")
	}
	if rfs == t.Opts.RFS && xps == t.Opts.XPS {
		return nil
	}
	t.Opts.RFS, t.Opts.XPS = rfs, xps
	return t.steer()
}

// steer writes the receive and transmit steering on the target's links.
// sysfs shows the devices of the namespace it was mounted in, so the
// writes run on a thread that enters the target's namespace and mounts a
// private sysfs there, as ip-netns-exec does; that thread then exits.
func (t *Topology) steer() error {
	all := cpuMask(runtime.NumCPU())
	writes := map[string]string{}
	for i := range t.Clients {
		dev := "/sys/class/net/lbbt" + strconv.Itoa(i) + "/queues/"
		if !t.Opts.RSS {
			continue
		}
		for k := range t.Opts.Queues {
			writes[dev+"rx-"+strconv.Itoa(k)+"/rps_cpus"] = all
			writes[dev+"rx-"+strconv.Itoa(k)+"/rps_flow_cnt"] = "0"
			if t.Opts.RFS {
				writes[dev+"rx-"+strconv.Itoa(k)+"/rps_flow_cnt"] = strconv.Itoa(flowCnt)
			}
			if k < runtime.NumCPU() {
				writes[dev+"tx-"+strconv.Itoa(k)+"/xps_cpus"] = "0"
				if t.Opts.XPS {
					writes[dev+"tx-"+strconv.Itoa(k)+"/xps_cpus"] = cpuMask1(k)
				}
			}
		}
	}
	if t.Opts.RFS && t.rfsWas == "" {
		was, err := os.ReadFile(rfsSysctl)
		if err != nil {
			return err
		}
		t.rfsWas = strings.TrimSpace(string(was))
		if err := saveState(t.prefix, t.rfsWas); err != nil {
			return err
		}
		if err := os.WriteFile(rfsSysctl, []byte(strconv.Itoa(rfsEntries)), 0o644); err != nil {
			return fmt.Errorf("RFS: %w", err)
		}
	}
	if len(writes) == 0 {
		return nil
	}
	return inNamespaceWithSysfs(t.Target, func() error {
		for path, v := range writes {
			if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
				return fmt.Errorf("steering: %w", err)
			}
		}
		return nil
	})
}

// inNamespaceWithSysfs runs f on a thread in namespace name with a
// private sysfs of that namespace mounted on /sys. The thread is left
// locked and so ends with its goroutine.
func inNamespaceWithSysfs(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's mounts are its own
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare mounts: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount(name, "/sys", "sysfs", 0, ""); err != nil {
			errc <- fmt.Errorf("mount sysfs: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Describe says how the path is built, for env.txt.
func (t *Topology) Describe() string {
	var b strings.Builder
	o := t.Opts
	fmt.Fprintf(&b, "netpath: target namespace %s, service %v, %d client namespace(s), %d queue(s) per target link, RSS %v, RFS %v, XPS %v\n",
		t.Target, t.Service, len(t.Clients), o.Queues, o.RSS, o.RFS, o.XPS)
	for i, c := range t.Clients {
		fmt.Fprintf(&b, "netpath: client %s %v (src %s) <-> lbbt%d 198.18.%d.1\n", c.NS, c.Addr, c.Src, i, i)
	}
	if o.RSS {
		fmt.Fprintf(&b, "netpath: rps_cpus %s on every receive queue", cpuMask(runtime.NumCPU()))
		if o.RFS {
			fmt.Fprintf(&b, ", rps_flow_cnt %d, rps_sock_flow_entries %d", flowCnt, rfsEntries)
		}
		if o.XPS {
			b.WriteString(", xps_cpus: CPU i -> tx queue i")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Down removes the namespaces (and with them every link in them), the
// management link, and restores RFS.
func (t *Topology) Down() error {
	var errs []error
	if t.rfsWas != "" {
		if err := os.WriteFile(rfsSysctl, []byte(t.rfsWas), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", rfsSysctl, err))
		}
	}
	if l, err := netlink.LinkByName(t.mgmtName()); err == nil {
		netlink.LinkDel(l)
	}
	errs = append(errs, removeNamespaces(t.prefix)...)
	os.Remove(filepath.Join(statePath, strings.TrimSuffix(t.prefix, "-")+".json"))
	return errors.Join(errs...)
}

// Start starts cmd in namespace name: the child inherits the namespace
// of the thread that forks it.
func Start(name string, cmd *exec.Cmd) error { return Do(name, cmd.Start) }

// CleanStale removes what runs that are gone left behind: namespaces
// named after a pid that no longer runs, their management links, and the
// RFS table size they changed. It returns what it removed.
func CleanStale() ([]string, error) {
	ents, _ := os.ReadDir(netnsDir)
	var removed []string
	seen := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		pid, ok := pidOf(name)
		if !ok || alive(pid) {
			continue
		}
		prefix := nsPrefix + strconv.Itoa(pid) + "-"
		if seen[prefix] {
			continue
		}
		seen[prefix] = true
		t := &Topology{prefix: prefix}
		if l, err := netlink.LinkByName("lbbm" + strconv.Itoa(pid%1_000_000_000)); err == nil {
			netlink.LinkDel(l)
		}
		if was, err := loadState(prefix); err == nil && was != "" {
			os.WriteFile(rfsSysctl, []byte(was), 0o644)
		}
		os.Remove(filepath.Join(statePath, strings.TrimSuffix(prefix, "-")+".json"))
		if errs := removeNamespaces(t.prefix); len(errs) > 0 {
			return removed, errors.Join(errs...)
		}
		removed = append(removed, strings.TrimSuffix(prefix, "-"))
	}
	return removed, nil
}

// Namespaces lists the namespaces of ours that exist now (for tests and
// checks).
func Namespaces() []string {
	ents, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range ents {
		if _, ok := pidOf(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}

const netnsDir = "/var/run/netns"

func pidOf(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	return pid, ok && err == nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func removeNamespaces(prefix string) []error {
	ents, _ := os.ReadDir(netnsDir)
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := netns.DeleteNamed(e.Name()); err != nil {
				errs = append(errs, fmt.Errorf("delete namespace %s: %w", e.Name(), err))
			}
		}
	}
	return errs
}

type state struct {
	RFSWas string `json:"rps_sock_flow_entries_was"`
}

func saveState(prefix, rfsWas string) error {
	if err := os.MkdirAll(statePath, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(state{RFSWas: rfsWas})
	return os.WriteFile(filepath.Join(statePath, strings.TrimSuffix(prefix, "-")+".json"), b, 0o644)
}

func loadState(prefix string) (string, error) {
	b, err := os.ReadFile(filepath.Join(statePath, strings.TrimSuffix(prefix, "-")+".json"))
	if err != nil {
		return "", err
	}
	var s state
	err = json.Unmarshal(b, &s)
	return s.RFSWas, err
}

// newNamed makes a named namespace without leaving the calling thread
// in it.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return netns.None(), err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		// This thread must not run anything else: keep it locked so it
		// ends with the goroutine.
		runtime.LockOSThread()
		return netns.None(), serr
	}
	return h, err
}

func addr(p netip.Prefix) *netlink.Addr { return &netlink.Addr{IPNet: ipnet(p)} }

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// cpuMask is the hex mask of the first n CPUs, as sysfs writes it.
func cpuMask(n int) string {
	var words []string
	for n > 0 {
		k := min(n, 32)
		words = append([]string{fmt.Sprintf("%x", uint64(1)<<k-1)}, words...)
		n -= k
	}
	return strings.Join(words, ",")
}

// cpuMask1 is the mask of CPU i alone.
func cpuMask1(i int) string {
	words := make([]string, i/32+1)
	for w := range words {
		words[w] = "0"
	}
	words[len(words)-1-i/32] = fmt.Sprintf("%x", uint32(1)<<(i%32))
	return strings.Join(words, ",")
}

// Do runs f on a thread in namespace name; sockets f opens belong to it.
func Do(name string, f func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread() // else the thread ends with this goroutine
		}
		errc <- err
	}()
	return <-errc
}

// ReadSysfs reads a sysfs file of namespace name's devices.
func ReadSysfs(name, path string) (string, error) {
	var out string
	err := inNamespaceWithSysfs(name, func() error {
		b, err := os.ReadFile(path)
		out = strings.TrimSpace(string(b))
		return err
	})
	return out, err
}
