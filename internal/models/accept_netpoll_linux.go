package models

import (
	"errors"

	"github.com/lbbench/lbbench/internal/serve"
	"github.com/lbbench/lbbench/internal/shm"
)

// netpollSource accepts the way Go's net.Listener does on Linux: the
// listening socket sits in an epoll set of the worker's own, registered
// edge-triggered as Go's netpoller registers it, and every wake-up
// accepts until EAGAIN. On a shared socket every worker is woken for
// every connection, as with Go's netpoller. The set is the worker's event
// loop (internal/serve), so one goroutine accepts and serves, as nginx's
// loop does, and accept4 is called raw: Go's own Accept would also set
// TCP_NODELAY and four keep-alive options and ask getsockname on every
// connection, a cost nginx does not pay and the benchmark does not need.
type netpollSource struct {
	acceptor
	loop   *serve.Lean
	shared bool // the socket is shared by every worker
}

func newNetpollSource(lfd int, ino uint64, slot *shm.Slot, loop *serve.Lean, shared bool) (*netpollSource, error) {
	if loop == nil {
		return nil, errors.New("netpoll accept needs the worker's event loop")
	}
	return &netpollSource{acceptor: acceptor{lfd: lfd, ino: ino, slot: slot}, loop: loop, shared: shared}, nil
}

// run hands the listening socket to the loop, which accepts and serves;
// it returns once the loop has let go of it.
func (s *netpollSource) run(serve func(fd int)) {
	if err := s.loop.Listen(&s.acceptor, serve, s.shared); err != nil {
		return
	}
	<-s.loop.Unlistened()
}

// stop asks the loop to take the socket out of its set and close it.
func (s *netpollSource) stop() {
	s.stopping.Store(true)
	s.loop.Unlisten()
}

// listenerSource is Go's own accept path with -http nethttp:
// http.Server.Serve on the listening socket as a net.Listener.
type listenerSource struct {
	l   *serve.Listener
	ino uint64
}

func newListenerSource(std *serve.NetHTTP, lfd int, ino uint64) (*listenerSource, error) {
	l, err := std.Listener(lfd)
	if err != nil {
		return nil, err
	}
	return &listenerSource{l: l, ino: ino}, nil
}

func (l *listenerSource) run(func(fd int)) { l.l.Serve() }
func (l *listenerSource) stop()            { l.l.Close() }
func (l *listenerSource) inode() uint64    { return l.ino }
