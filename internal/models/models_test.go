package models

import (
	"bytes"
	"log"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
)

func TestValidateModelChecks(t *testing.T) {
	for _, c := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.Model = "fastest" }, `unknown model "fastest"`},
		{func(c *Config) { c.Model = Shared; c.Steer = "bpf-rr" }, "-steer bpf-rr applies to the reuseport model only"},
		{func(c *Config) { c.Model = Single; c.Accept = AcceptBlocking }, "-accept applies to the shared and reuseport models"},
		{func(c *Config) { c.Model = Shared; c.Dispatch = DispatchLeast }, "-dispatch applies to the single model only"},
		{func(c *Config) { c.Model = Single; c.Restart = RestartHandoff }, "-restart fd-handoff goes with -model reuseport"},
		{func(c *Config) { c.MetricsAddr = c.Addr }, "-addr and -metrics-addr are both"},
		{func(c *Config) { c.Addr = "0.0.0.0:9100" }, "-addr and -metrics-addr are both"},
		{func(c *Config) { c.HeaderTimeout = 0 }, "-header-timeout"},
	} {
		cfg := DefaultConfig()
		c.set(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
	// The model picks its natural restart strategy; CPU steering pins
	// and measures locality.
	for model, restart := range map[string]string{Single: RestartDispatch, Shared: RestartInherit, ReusePort: RestartOverlap} {
		cfg := DefaultConfig()
		cfg.Model = model
		if err := cfg.Validate(); err != nil || cfg.Restart != restart {
			t.Errorf("%s: restart %q (%v), want %q", model, cfg.Restart, err, restart)
		}
	}
	cfg := DefaultConfig()
	cfg.Steer = "cpu"
	if cfg.Validate(); !cfg.Pin || !cfg.Locality {
		t.Errorf("-steer cpu: pin %v locality %v", cfg.Pin, cfg.Locality)
	}
}

// TestFilesByName: what the supervisor names, the worker finds under the
// same name, however many files there are.
func TestFilesByName(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	files, names, err := childFiles([]namedFile{{fileControl, int(r.Fd())}, {fileListener, int(w.Fd())}})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFiles(files)
	if !slices.Equal(names, []string{fileControl, fileListener}) {
		t.Fatalf("names %v", names)
	}
	if int(files[0].Fd()) == int(r.Fd()) {
		t.Error("the child's file is the supervisor's own descriptor, not a duplicate")
	}
	in := inheritedFrom(names)
	if fd, err := in.fd(fileListener); err != nil || fd != 4 {
		t.Errorf("listener at %d (%v), want 4", fd, err)
	}
	if _, err := in.fd(fileProg); err == nil || !strings.Contains(err.Error(), "no steer-prog file") {
		t.Errorf("a missing file: %v", err)
	}
}

// TestRetryCounts: a shortage is counted and retried, an abort retried,
// anything else ends the loop.
func TestRetryCounts(t *testing.T) {
	region, f, err := shm.Create(1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &acceptor{slot: region.Slot(0)}
	if !a.retry(unix.EMFILE) || !a.retry(unix.ENFILE) || !a.retry(unix.ECONNABORTED) || !a.retry(unix.ENOMEM) {
		t.Fatal("a retryable error ended the loop")
	}
	if a.retry(unix.EBADF) {
		t.Fatal("EBADF was retried")
	}
	s := a.slot
	if s.Load(shm.AcceptFDLimit) != 2 || s.Load(shm.AcceptAborted) != 1 || s.Load(shm.AcceptNoMemory) != 1 {
		t.Errorf("fd_limit %d aborted %d no_memory %d", s.Load(shm.AcceptFDLimit), s.Load(shm.AcceptAborted), s.Load(shm.AcceptNoMemory))
	}
	if a.backoff == 0 {
		t.Error("no backoff after a shortage")
	}
	a.Accepted()
	if a.backoff != 0 {
		t.Error("backoff kept after a success")
	}
}

// TestDispatchOrder: round-robin moves on one worker per connection;
// least picks the worker with the fewest connections held or in flight,
// and skips none.
func TestDispatchOrder(t *testing.T) {
	region, f, err := shm.Create(3)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &Supervisor{region: region, procs: []*proc{{id: 0, slot: 0}, {id: 1, slot: 1}, {id: 2, slot: 2}}}
	rr := &single{cfg: &Config{Dispatch: DispatchRR}}
	var firsts []int
	for range 4 {
		firsts = append(firsts, rr.dispatchOrder(s, s.procs)[0])
	}
	if !slices.Equal(firsts, []int{0, 1, 2, 0}) {
		t.Errorf("round-robin firsts %v", firsts)
	}
	region.Slot(0).Add(shm.Open, 5)
	region.Slot(1).Add(shm.Open, 1)
	s.procs[1].handed = 3 // sent three, received none: 4 in use
	region.Slot(2).Add(shm.Open, 2)
	least := &single{cfg: &Config{Dispatch: DispatchLeast}}
	if o := least.dispatchOrder(s, s.procs); o[0] != 2 || len(o) != 3 {
		t.Errorf("least order %v, want worker 2 first", o)
	}
}

// fakeHost is a supervisor reduced to what a model may use of it.
type fakeHost struct {
	region *shm.Region
	procs  []*proc
	logs   bytes.Buffer
}

func (h *fakeHost) logger() *log.Logger          { return log.New(&h.logs, "", 0) }
func (h *fakeHost) allowedCPUs() []int           { return []int{0} }
func (h *fakeHost) ownSlot() *shm.Slot           { return h.region.Slot(h.region.Slots() - 1) }
func (h *fakeHost) slot(p *proc) *shm.Slot       { return h.region.Slot(p.slot) }
func (h *fakeHost) lockWorkers() ([]*proc, bool) { return h.procs, false }
func (h *fakeHost) unlockWorkers()               {}

// TestHandOffSkipsFullWorkers: the single model's dispatcher passes a
// connection to the next worker with room, skipping one at its
// descriptor capacity and one gone (nil), and counts what it handed.
func TestHandOffSkipsFullWorkers(t *testing.T) {
	region, f, err := shm.Create(4)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &fakeHost{region: region}
	var workerEnds []int
	for i := range 3 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		workerEnds = append(workerEnds, fds[1])
		h.procs = append(h.procs, &proc{id: i, slot: i, ctl: fds[0]})
		region.Slot(i).Add(shm.Capacity, 10)
	}
	region.Slot(0).Add(shm.Open, 10) // at capacity
	gone := h.procs[2]
	h.procs[2] = nil
	m := &single{cfg: &Config{Dispatch: DispatchRR}}
	conn, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	for range 2 {
		m.handOff(h, conn)
	}
	if h.procs[1].handed != 2 || h.procs[0].handed != 0 || gone.handed != 0 {
		t.Errorf("handed %d, %d, %d; want 0, 2, 0", h.procs[0].handed, h.procs[1].handed, gone.handed)
	}
	if !m.roomFor(h) {
		t.Error("no room seen though worker 1 has 8 places")
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	for range 2 {
		if _, oobn, _, _, err := unix.Recvmsg(workerEnds[1], buf, oob, unix.MSG_DONTWAIT); err != nil || oobn == 0 {
			t.Fatalf("worker 1 received no descriptor: %v", err)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob)
		fds, _ := unix.ParseUnixRights(&msgs[0])
		unix.Close(fds[0])
	}
	if h.logs.Len() > 0 {
		t.Errorf("logged %q", h.logs.String())
	}
}
