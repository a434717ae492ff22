package models

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/rawio"
	"github.com/lbbench/lbbench/internal/shm"
)

// server serves HTTP/1.1 on the connections a worker gets. It is the hot
// path: one goroutine per connection, a pooled buffer, prebuilt response
// heads, counters in shared memory.
type server struct {
	slot  *shm.Slot
	work  time.Duration
	sleep time.Duration

	// Prebuilt responses: status line and headers up to (not including)
	// the Connection header.
	head []byte

	// loads, if set (bpf-least), is this worker's counter in the eBPF
	// program's map: the program adds one when it assigns a connection,
	// the worker takes one off when the connection closes.
	loads *uint64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining atomic.Bool
	wg       sync.WaitGroup
}

const body = "ok\n"

func newServer(slot *shm.Slot, id, pid int, work, sleep time.Duration) *server {
	h := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nX-Worker-Pid: " + strconv.Itoa(pid) + "\r\nX-Worker-Id: " + strconv.Itoa(id) + "\r\n"
	return &server{slot: slot, work: work, sleep: sleep, head: []byte(h), conns: map[*conn]struct{}{}}
}

// Connection states. A connection is idle between requests; drain closes
// idle connections at once and lets new and active ones finish their
// request. A new connection has not sent its first request yet: closing
// it would reset a client that did nothing wrong.
const (
	stateNew int32 = iota
	stateIdle
	stateActive
	stateClosed
)

type conn struct {
	net.Conn
	state atomic.Int32
	// local is "1" when the connection's packets arrive on the CPU the
	// worker accepted it on (SO_INCOMING_CPU), "0" when not, "" unknown.
	local string
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// start registers nc (already counted as accepted) and serves it on a new
// goroutine. Accept loops call it; they have all stopped before drain.
func (s *server) start(nc net.Conn, local string) {
	c := &conn{Conn: nc, local: local}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.slot.Add(shm.Open, 1)
	s.wg.Add(1)
	go s.serve(c)
}

func (s *server) serve(c *conn) {
	defer func() {
		c.state.Store(stateClosed)
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.slot.Dec(shm.Open)
		if s.loads != nil {
			atomic.AddUint64(s.loads, ^uint64(0))
		}
		s.wg.Done()
	}()

	rw, err := rawio.New(c.Conn)
	if err != nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	out := make([]byte, 0, 256)
	filled := 0
	var discard int64 // request body bytes still to skip
	var req httpwire.Request
	for {
		n, err := rw.Read(buf[filled:])
		if n == 0 || err != nil {
			return
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) && !c.state.CompareAndSwap(stateNew, stateActive) {
			return // closed by drain
		}
		filled += n
		start := time.Now()
		p := 0
		out = out[:0]
		closing := false
		nreq := 0
		for p < filled && !closing {
			if discard > 0 {
				k := min(discard, int64(filled-p))
				discard -= k
				p += int(k)
				continue
			}
			hn, err := httpwire.ParseRequest(buf[p:filled], &req)
			if err != nil {
				out = appendError(out, err)
				closing = true
				break
			}
			if hn == 0 {
				break
			}
			p += hn
			discard = req.BodyLen
			s.handle()
			closing = req.Close || s.draining.Load()
			out = s.appendResponse(out, &req, closing, c.local)
			nreq++
		}
		copy(buf, buf[p:filled])
		filled -= p
		if len(out) > 0 {
			if err := rw.Write(out); err != nil {
				return
			}
			if nreq > 0 {
				s.slot.Add(shm.Requests, uint64(nreq))
				d := time.Since(start)
				for range nreq {
					s.slot.Observe(d)
				}
			}
		}
		if closing {
			return
		}
		if !c.state.CompareAndSwap(stateActive, stateIdle) {
			return
		}
		if s.draining.Load() && filled == 0 {
			return
		}
	}
}

// handle does the configured per-request work.
func (s *server) handle() {
	if s.work > 0 {
		// A busy loop, as a CPU-heavy handler would be.
		end := time.Now().Add(s.work)
		for time.Now().Before(end) {
		}
	}
	if s.sleep > 0 {
		time.Sleep(s.sleep)
	}
}

func (s *server) appendResponse(out []byte, req *httpwire.Request, closing bool, local string) []byte {
	out = append(out, s.head...)
	if local != "" {
		out = append(out, "X-Conn-Local: "...)
		out = append(out, local...)
		out = append(out, "\r\n"...)
	}
	switch {
	case closing:
		out = append(out, "Connection: close\r\n"...)
	case req.HTTP10:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "\r\n"...)
	if !req.Head {
		out = append(out, body...)
	}
	return out
}

func appendError(out []byte, err error) []byte {
	status := "400 Bad Request"
	switch err {
	case httpwire.ErrTooLarge:
		status = "431 Request Header Fields Too Large"
	case httpwire.ErrUnsupported:
		status = "501 Not Implemented"
	}
	return append(out, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
}

// drain stops keep-alive: idle connections close now, active ones after
// their response. It returns when all are gone or grace has passed.
func (s *server) drain(grace time.Duration) bool {
	s.mu.Lock()
	s.draining.Store(true)
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(grace):
		return false
	}
}
