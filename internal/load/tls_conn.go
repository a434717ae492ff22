package load

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/kattr"
	"github.com/lbbench/lbbench/internal/rawio"
)

// tlsLoop drives a share of an https:// run's connections. crypto/tls
// needs a net.Conn, so each connection slot is a goroutine over Go's
// netpoller rather than a state in the epoll loop; the slots keep the
// epoll loop's request bytes, response parser, schedule and statistics
// (the slot methods consume, record and learn), so attribution, the
// open loop's intended times and the series are the same as over TCP.
// Sockets are opened by raw calls on the loop's own goroutine when the
// run has -netns (that goroutine's thread is in the namespace, and a
// socket belongs to the namespace it was made in).
type tlsLoop struct {
	e     *engine
	shell *loop // the slots' loop: engine and shard; no epoll set
	tls   *tlsShard
	slots []*tlsSlot
	stop  chan struct{}
	once  sync.Once
	dials chan dialReq // -netns: sockets made on the loop's thread

	mu       sync.Mutex
	inFlight int64
	oldest   time.Time
}

type dialReq struct {
	local netip.Addr
	reply chan dialRes
}

type dialRes struct {
	fd  int
	err error
}

// tlsSlot is one connection slot.
type tlsSlot struct {
	t     *tlsLoop
	s     *slot
	cfg   *tls.Config
	mu    sync.Mutex // guards conn against poke
	conn  *tls.Conn
	timer *time.Timer
}

func newTLSLoop(e *engine) *tlsLoop {
	t := &tlsLoop{e: e, shell: &loop{e: e, sh: newShard()}, tls: &tlsShard{TLSStats: *NewTLSStats()}, stop: make(chan struct{})}
	if e.o.NetNS != "" {
		t.dials = make(chan dialReq)
	}
	return t
}

func (t *tlsLoop) addSlot(idx int) {
	s := &slot{l: t.shell, idx: idx, fd: -1,
		parser: httpwire.NewResponseParser(t.e.o.PIDHeader, t.e.o.IDHeader, "X-Conn-Local")}
	var cache tls.ClientSessionCache
	if t.e.o.TLS.Resume {
		// One session per slot: a slot's reconnects resume what its
		// last connection was given, as wrk's connections do.
		cache = tls.NewLRUClientSessionCache(1)
	}
	t.slots = append(t.slots, &tlsSlot{t: t, s: s, cfg: t.e.o.tlsConfig(cache)})
}

func (t *tlsLoop) stats() *shard { return t.shell.sh }
func (t *tlsLoop) closeSet()     {}

func (t *tlsLoop) cutCount() (int64, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.oldest
}

// poke ends the run: sleeping slots wake, and every connection's
// deadline passes so blocked reads and handshakes return.
func (t *tlsLoop) poke() {
	t.once.Do(func() { close(t.stop) })
	for _, ts := range t.slots {
		ts.mu.Lock()
		if ts.conn != nil {
			ts.conn.SetDeadline(time.Unix(1, 0))
		}
		ts.mu.Unlock()
	}
}

func (t *tlsLoop) run() {
	var wg sync.WaitGroup
	for _, ts := range t.slots {
		wg.Go(ts.run)
	}
	if t.dials == nil {
		wg.Wait()
		return
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case r := <-t.dials:
			fd, err := rawConnect(t.e, r.local)
			r.reply <- dialRes{fd, err}
		case <-done:
			return
		}
	}
}

// run serves the slot's requests until the run ends.
func (ts *tlsSlot) run() {
	s, e := ts.s, ts.t.e
	defer ts.closeConn()
	for !e.stopped.Load() {
		var intended time.Time
		if e.sched == nil {
			intended = time.Now()
			if !e.end.IsZero() && !intended.Before(e.end) {
				return
			}
		} else {
			at, ok := e.sched.Next()
			if !ok {
				return
			}
			intended = at
			if !ts.sleep(time.Until(at)) {
				return
			}
		}
		if e.o.Requests > 0 && !intended.Before(e.measureStart) && e.tickets.Add(1) > e.o.Requests {
			return
		}
		s.intended = intended
		if kind := ts.request(); kind != "" {
			ts.fail(kind)
			if e.sched == nil && (kind == ErrRefused || kind == ErrAddrNotAvail) && !ts.sleep(time.Millisecond) {
				return
			}
		}
	}
}

// sleep waits d unless the run ends first (false).
func (ts *tlsSlot) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	if ts.timer == nil {
		ts.timer = time.NewTimer(d)
	} else {
		ts.timer.Reset(d)
	}
	select {
	case <-ts.timer.C:
		return true
	case <-ts.t.stop:
		return false
	}
}

// request sends one request, connecting and shaking hands first if the
// slot has no connection, and reads its response; it returns the kind
// of error that ended it, or "" once the response is recorded.
func (ts *tlsSlot) request() string {
	s, e := ts.s, ts.t.e
	// The read buffer is the request's, not the slot's: a connection
	// that waits for its next request (open loop) holds none.
	bp := readBufPool.Get().(*[]byte)
	s.borrow(*bp)
	defer func() { s.buf = nil; readBufPool.Put(bp) }()
	s.x = sample{}
	s.start = time.Now()
	deadline := s.start.Add(e.o.Timeout)
	s.closeAfter = e.o.Mode == ModeClose || (e.o.ReqsPerConn > 0 && s.reqs+1 >= e.o.ReqsPerConn)
	out := e.reqKeep
	if s.closeAfter {
		out = e.reqClose
	}
	s.filled, s.head, s.haveHead, s.bodyLeft, s.first = 0, 0, false, 0, time.Time{}
	if ts.conn == nil {
		if kind := ts.dial(deadline); kind != "" {
			return kind
		}
	} else {
		ts.conn.SetDeadline(deadline)
		if e.stopped.Load() { // poke may have come before the deadline was set
			return ErrOther
		}
	}
	s.sent = time.Now()
	if _, err := ts.conn.Write(out); err != nil {
		return classify(err)
	}
	for {
		buf := s.buf[s.filled:]
		if s.haveHead {
			buf = s.buf // body bytes: counted, not kept
		}
		n, err := ts.conn.Read(buf)
		if n > 0 {
			if s.first.IsZero() {
				s.first = time.Now()
			}
			complete, kind := s.consume(n)
			switch {
			case kind != "":
				return kind
			case complete:
				ts.finish()
				return ""
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				switch {
				case s.haveHead && s.resp.BodyLen < 0 && !s.resp.Chunked:
					s.resp.Close = true
					ts.finish()
					return ""
				case !s.haveHead && s.filled > 0:
					return ErrMalformed
				}
			}
			return classify(err)
		}
	}
}

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// dial connects and shakes hands, recording both.
func (ts *tlsSlot) dial(deadline time.Time) string {
	s, t, e := ts.s, ts.t, ts.t.e
	var fd int
	var err error
	if t.dials != nil {
		reply := make(chan dialRes, 1)
		select {
		case t.dials <- dialReq{e.source(), reply}:
		case <-t.stop:
			return ErrOther
		}
		r := <-reply
		fd, err = r.fd, r.err
	} else {
		fd, err = rawConnect(e, e.source())
	}
	if err != nil {
		return classify(err)
	}
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return classify(err)
	}
	s.began(s.start)
	nc.SetDeadline(deadline)
	if err := ts.connected(nc); err != nil {
		nc.Close()
		return classify(err)
	}
	s.x.connect = time.Since(s.start)
	tc := tls.Client(countingConn{nc, &s.rx}, ts.cfg)
	ts.mu.Lock()
	ts.conn = tc
	ts.mu.Unlock()
	if e.stopped.Load() { // poked before the conn was there to be cut
		tc.SetDeadline(time.Unix(1, 0))
	}
	h0 := time.Now()
	err = tc.Handshake()
	if err == nil && tc.ConnectionState().NegotiatedProtocol != "" && tc.ConnectionState().NegotiatedProtocol != "http/1.1" {
		err = fmt.Errorf("tls: server chose ALPN %q", tc.ConnectionState().NegotiatedProtocol)
	}
	now := time.Now()
	measured := ts.measured(now)
	if err != nil {
		reason := handshakeReason(err)
		if measured {
			t.tls.failed(reason)
			if f := e.o.TLS.ObserveHandshake; f != nil {
				f(reason)
			}
		}
		if reason == TLSTimeout {
			return ErrTimeout
		}
		return ErrTLS
	}
	if measured {
		resumed := tc.ConnectionState().DidResume
		t.tls.ok(resumed, int64(now.Sub(h0)))
		if f := e.o.TLS.ObserveHandshake; f != nil {
			f(map[bool]string{true: HandshakeResumed, false: HandshakeFull}[resumed])
		}
	}
	return ""
}

// connected waits for the non-blocking connect to finish, and learns
// the local address the kernel chose (kernel attribution's 4-tuple).
func (ts *tlsSlot) connected(nc net.Conn) error {
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soErr = err
			return true
		case v != 0:
			soErr = syscall.Errno(v)
			return true
		}
		if _, err := unix.Getpeername(int(fd)); err == unix.ENOTCONN {
			return false
		}
		if ts.t.e.kernel {
			ts.s.tuple = kattr.Tuple{}
			if local, err := rawio.LocalAddr(int(fd)); err == nil {
				ts.s.tuple = kattr.Tuple{Client: local, Server: ts.t.e.tupleRemote}
			}
		}
		return true
	})
	if werr != nil {
		return werr
	}
	return soErr
}

// measured says whether the request under way counts.
func (ts *tlsSlot) measured(now time.Time) bool {
	e := ts.t.e
	return !ts.s.intended.Before(e.measureStart) && (e.end.IsZero() || !now.After(e.end)) && !e.stopped.Load()
}

// finish records a whole response (slot.finish's counterpart).
func (ts *tlsSlot) finish() {
	s := ts.s
	done := time.Now()
	s.reqs++
	status := s.resp.Status
	if s.resp.Close || s.closeAfter {
		ts.closeConn()
	}
	s.complete(status, done)
}

// fail records a failed request and closes its connection; one the end
// of the run cut is counted as in flight instead.
func (ts *tlsSlot) fail(kind string) {
	s, t, e := ts.s, ts.t, ts.t.e
	unserved := s.unserved()
	ts.closeConn()
	if e.stopped.Load() {
		if !s.intended.Before(e.measureStart) {
			t.mu.Lock()
			t.inFlight++
			if t.oldest.IsZero() || s.intended.Before(t.oldest) {
				t.oldest = s.intended
			}
			t.mu.Unlock()
		}
		return
	}
	s.x = sample{err: kind, unserved: unserved}
	s.record(time.Now())
}

func (ts *tlsSlot) closeConn() {
	ts.mu.Lock()
	c := ts.conn
	ts.conn = nil
	ts.mu.Unlock()
	ts.s.reqs = 0 // the next request opens a connection: its first
	if c != nil {
		c.Close()
	}
}

// makeTLSLoops makes n loops with the connections dealt out in turn.
func (e *engine) makeTLSLoops(n int) {
	for i := range n {
		t := newTLSLoop(e)
		for c := i; c < e.o.Conns; c += n {
			t.addSlot(c)
		}
		e.loops = append(e.loops, t)
	}
}

// mergeTLS sums the loops' handshake counts (nil: not an https:// run).
func (e *engine) mergeTLS() *TLSStats {
	if !e.o.TLS.Enabled {
		return nil
	}
	out := NewTLSStats()
	for _, l := range e.loops {
		if t, ok := l.(*tlsLoop); ok {
			t.tls.mu.Lock()
			out.Add(&t.tls.TLSStats)
			t.tls.mu.Unlock()
		}
	}
	return out
}
