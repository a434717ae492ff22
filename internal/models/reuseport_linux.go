package models

import (
	"errors"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/sockets"
)

// reusePort is the model where every worker opens its own listening
// socket with SO_REUSEPORT on the same address, and the kernel picks a
// socket for each new connection: by a hash of the 4-tuple, or by the
// steering program -steer attaches (reuseport_steer_linux.go). With the
// fd-handoff restart strategy the supervisor opens and holds the
// sockets, so a worker's successor inherits its queue.
type reusePort struct {
	cfg     *Config
	held    []int // fd-handoff: worker id -> the socket the supervisor holds
	heldIno map[uint64]string
	steer   *steering
	// migrateWas is net.ipv4.tcp_migrate_req before reuseport-migrate
	// set it ("": untouched).
	migrateWas string
}

func newReusePort(c *Config) (*reusePort, error) {
	if c.Dispatch != DispatchRR {
		return nil, errors.New("-dispatch applies to the single model only")
	}
	if err := checkOwn(c, ReusePort); err != nil {
		return nil, err
	}
	return &reusePort{cfg: c}, nil
}

func (m *reusePort) acceptName() string   { return m.cfg.Accept }
func (m *reusePort) dispatchName() string { return "none" }

func (m *reusePort) listen(h host) error {
	if m.cfg.Restart == RestartMigrate {
		was, err := enableMigration(h.logger())
		m.migrateWas = was
		if err != nil {
			return err
		}
	}
	var err error
	if m.steer, err = loadSteering(m.cfg, h.allowedCPUs()); err != nil {
		return err
	}
	if m.cfg.Restart != RestartHandoff {
		return nil
	}
	m.heldIno = map[uint64]string{}
	for id := range m.cfg.Workers {
		fd, err := sockets.Listen(m.cfg.Addr, m.listenOptions(true))
		if err != nil {
			return err
		}
		m.held = append(m.held, fd)
		ino, err := sockets.Inode(fd)
		if err != nil {
			return err
		}
		m.heldIno[ino] = strconv.Itoa(id)
	}
	return nil
}

func (m *reusePort) listenOptions(blocking bool) sockets.ListenOptions {
	return sockets.ListenOptions{ReusePort: true, Backlog: m.cfg.Backlog, MPTCP: m.cfg.MPTCP, Blocking: blocking,
		UDP: m.cfg.Proto == ProtoUDP, RcvBuf: m.cfg.RcvBuf}
}

// files: with fd-handoff the worker's held socket; with eBPF steering
// the program and its maps. Called at every spawn of worker id.
func (m *reusePort) files(id int) ([]namedFile, error) {
	var out []namedFile
	if m.held != nil {
		out = append(out, namedFile{fileListener, m.held[id]})
	}
	if m.steer != nil {
		out = append(out, m.steer.files(id)...)
	}
	return out, nil
}

func (m *reusePort) serve(host) {}

// stopAccepting: each worker closes its own socket as it stops; held
// sockets close now, so that none outlives the workers that drain.
func (m *reusePort) stopAccepting() {
	for _, fd := range m.held {
		unix.Close(fd)
	}
	m.held = nil
}

func (m *reusePort) listeners(procs []*proc) map[uint64]string {
	if m.heldIno != nil {
		return m.heldIno
	}
	out := map[uint64]string{}
	for _, p := range procs {
		if p != nil && p.inode != 0 {
			out[p.inode] = strconv.Itoa(p.id)
		}
	}
	return out
}

func (m *reusePort) close() {
	m.stopAccepting()
	if m.steer != nil {
		m.steer.close()
	}
	restoreMigration(m.migrateWas)
	m.migrateWas = ""
}

// source: the worker's own socket (or the one the supervisor holds for
// it), steered, accepted on with the worker's strategy.
func (m *reusePort) source(w *worker) (source, error) {
	var fd int
	var err error
	if m.cfg.Restart == RestartHandoff {
		if fd, err = w.files.fd(fileListener); err != nil {
			return nil, err
		}
	} else if fd, err = sockets.Listen(m.cfg.Addr, m.listenOptions(m.cfg.Accept == AcceptBlocking)); err != nil {
		return nil, err
	}
	fail := func(err error) (source, error) {
		unix.Close(fd)
		return nil, err
	}
	if err := checkListener(fd, m.cfg, w.spec.ID); err != nil {
		return fail(err)
	}
	if err := joinSteering(w, fd); err != nil {
		return fail(err)
	}
	return newAcceptSource(m.cfg.Accept, fd, w, false)
}

func pageRound(n int) int {
	ps := unix.Getpagesize()
	return (n + ps - 1) / ps * ps
}

// resetLoad zeroes worker id's count in the bpf-least loads map.
func resetLoad(mem []byte, id int) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[8*id])), 0)
}
