package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbbench/lbbench/internal/shm"
)

// NetHTTP serves a worker's connections with Go's net/http: a
// goroutine per connection on Go's netpoller. Where the worker accepts
// through Go's netpoller (shared and reuseport with -accept netpoll) it
// is exactly http.Server.Serve on a net.Listener; connections another
// strategy accepted (single's handed-over descriptors, blocking and
// exclusive accept) reach it through a listener fed by the source.
// Under TLS each connection is a tlsConn, which handshakes on net/http's
// first read.
type NetHTTP struct {
	slot   *shm.Slot
	work   time.Duration
	sleep  time.Duration
	pid    string
	id     string
	hs     *http.Server
	handed *handedListener
	served chan struct{} // closed when Serve on handed returns
	loads  *uint64       // bpf-least: this worker's count in the map
	tls    *tls.Config   // if set, TLS on every connection
	// draining: a stop began (a handshake cut then is the stop's).
	draining atomic.Bool
}

// NewNetHTTP starts a net/http serving path (Locality does not apply:
// net/http does not expose the connection's descriptor).
func NewNetHTTP(o Options) *NetHTTP {
	s := &NetHTTP{slot: o.Slot, work: o.Work, sleep: o.Sleep, pid: strconv.Itoa(o.PID), id: strconv.Itoa(o.ID),
		handed: newHandedListener(), served: make(chan struct{}), tls: o.TLS}
	s.hs = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: o.HeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		ConnState:         s.connState,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { s.hs.Serve(s.handed); close(s.served) }()
	return s
}

// ServeHTTP answers every request as the lean path does: 200 "ok".
func (s *NetHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
	if s.work > 0 {
		for end := start.Add(s.work); time.Now().Before(end); {
		}
	}
	if s.sleep > 0 {
		time.Sleep(s.sleep)
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["X-Worker-Pid"] = []string{s.pid}
	h["X-Worker-Id"] = []string{s.id}
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
	s.slot.Add(shm.Status2xx, 1)
	s.slot.Observe(time.Since(start))
}

// connState counts connections as they come and go. net/http does not
// say why a connection closed; closes are counted as the client's.
func (s *NetHTTP) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.slot.Add(shm.Accepted, 1)
		s.slot.Add(shm.Open, 1)
	case http.StateClosed, http.StateHijacked:
		s.slot.Add(shm.CloseClient, 1)
		s.slot.Dec(shm.Open)
		if s.loads != nil {
			atomic.AddUint64(s.loads, ^uint64(0))
		}
	}
}

// ServeFD hands an accepted descriptor to net/http, which owns it from
// here on.
func (s *NetHTTP) ServeFD(fd int) {
	f := os.NewFile(uintptr(fd), "conn")
	c, err := net.FileConn(f) // a duplicate, in Go's netpoller
	f.Close()
	if err != nil {
		s.slot.Add(shm.CloseError, 1)
		return
	}
	if s.tls != nil {
		c = s.tlsConn(c)
	}
	if !s.handed.put(c) {
		c.Close()
	}
}

// Drain is http.Server.Shutdown: no more accepts, idle connections
// close, requests under way finish within grace; then whatever is left is
// closed and drain returns false.
func (s *NetHTTP) Drain(grace time.Duration) bool {
	s.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.hs.Shutdown(ctx)
	if err != nil {
		s.hs.Close()
	}
	<-s.served
	return err == nil
}

// SetLoads gives bpf-least's counter for this worker.
func (s *NetHTTP) SetLoads(p *uint64) { s.loads = p }

// Listener is Go's own accept path: http.Server.Serve on a listening
// socket of the worker's, as a net.Listener.
type Listener struct {
	srv  *NetHTTP
	ln   net.Listener
	done chan struct{}
}

// Listener makes the listening socket lfd (which it then owns) a
// net.Listener for Serve.
func (s *NetHTTP) Listener(lfd int) (*Listener, error) {
	f := os.NewFile(uintptr(lfd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	if s.tls != nil {
		ln = &tlsListener{Listener: ln, s: s}
	}
	return &Listener{srv: s, ln: ln, done: make(chan struct{})}, nil
}

// Serve serves until Close closes the listener; connections already
// accepted go on being served (Drain stops them). Serve itself backs off
// and retries when out of descriptors, as net/http does.
func (l *Listener) Serve() {
	defer close(l.done)
	err := l.srv.hs.Serve(l.ln)
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("serve: %v", err)
	}
}

// Close closes the listener and waits for Serve to return.
func (l *Listener) Close() { l.ln.Close(); <-l.done }

// handedListener is a net.Listener whose connections were accepted
// elsewhere.
type handedListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandedListener() *handedListener {
	return &handedListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// put hands c over; false once the listener is closed.
func (h *handedListener) put(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.closed:
		return false
	}
}

func (h *handedListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

func (h *handedListener) Close() error   { h.once.Do(func() { close(h.closed) }); return nil }
func (h *handedListener) Addr() net.Addr { return &net.TCPAddr{} }

// tlsListener is tls.NewListener with tlsConn's counted handshake.
type tlsListener struct {
	net.Listener
	s *NetHTTP
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.tlsConn(c), nil
}

// tlsConn is a connection net/http serves under TLS: a tls.Conn that
// runs its handshake on the first read, within the read deadline
// net/http has just set for the request head (ReadHeaderTimeout, the
// header timeout), and counts it. To net/http it is a plain net.Conn,
// so it does not handshake again and never offers HTTP/2.
type tlsConn struct {
	*tls.Conn
	s    *NetHTTP
	once sync.Once
	err  error
}

func (s *NetHTTP) tlsConn(c net.Conn) net.Conn {
	return &tlsConn{Conn: tls.Server(c, s.tls), s: s}
}

func (c *tlsConn) Read(p []byte) (int, error) {
	c.once.Do(func() { _, c.err = handshake(c.Conn, c.s.slot, &c.s.draining) })
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}
