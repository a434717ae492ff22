package models

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/sockets"
)

// shared is the model where the supervisor binds one listening socket
// and every worker inherits it and accepts on it with its accept
// strategy: the kernel decides who is woken (epoll LIFO-like, blocking
// accept FIFO), which shows the thundering herd and its imbalance.
type shared struct {
	cfg *Config
	lfd int
	ino uint64
}

func newShared(c *Config) (*shared, error) {
	if c.Dispatch != DispatchRR {
		return nil, errors.New("-dispatch applies to the single model only")
	}
	if err := checkOwn(c, Shared); err != nil {
		return nil, err
	}
	return &shared{cfg: c, lfd: -1}, nil
}

func (m *shared) acceptName() string   { return m.cfg.Accept }
func (m *shared) dispatchName() string { return "none" }

// listen opens the one socket. It stays blocking in the supervisor,
// which never accepts on it; each worker sets O_NONBLOCK as its strategy
// needs.
func (m *shared) listen(host) error {
	fd, err := sockets.Listen(m.cfg.Addr, sockets.ListenOptions{Backlog: m.cfg.Backlog, MPTCP: m.cfg.MPTCP, Blocking: true,
		UDP: m.cfg.Proto == ProtoUDP, RcvBuf: m.cfg.RcvBuf})
	if err != nil {
		return err
	}
	m.lfd = fd
	m.ino, err = sockets.Inode(fd)
	return err
}

func (m *shared) files(int) ([]namedFile, error) {
	return []namedFile{{fileListener, m.lfd}}, nil
}

func (m *shared) serve(host) {}

// stopAccepting closes the supervisor's reference, so the socket closes
// as soon as the workers close theirs: a connection that arrives while
// they drain is refused, not queued to be reset at exit.
func (m *shared) stopAccepting() { m.close() }

func (m *shared) listeners([]*proc) map[uint64]string { return map[uint64]string{m.ino: "0"} }

func (m *shared) close() {
	if m.lfd >= 0 {
		unix.Close(m.lfd)
		m.lfd = -1
	}
}

// source: accept on the inherited socket.
func (m *shared) source(w *worker) (source, error) {
	fd, err := w.files.fd(fileListener)
	if err != nil {
		return nil, err
	}
	if err := checkListener(fd, m.cfg, w.spec.ID); err != nil {
		return nil, err
	}
	return newAcceptSource(m.cfg.Accept, fd, w, true)
}
