package kattr

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/asm"
)

// Serving attribution: who sent the response bytes of each connection.
//
// The kernel fires the sock_send_length tracepoint (Linux 6.3+) in
// sock_sendmsg_nosec, after the protocol's sendmsg returned, in the
// thread that sent: write(2), writev(2), send(2), sendto(2), sendmsg(2)
// and sendmmsg(2) all go through it, as do io_uring's send and sendmsg
// (they call sock_sendmsg), kernel TLS (its sendmsg is the socket's),
// and sendfile(2) and splice(2) to a socket since Linux 6.5 (which
// splice with MSG_SPLICE_PAGES through sock_sendmsg). Not covered:
// sendfile before 6.5 (sendpage) and io_uring's zero-copy send before
// it. Its arguments are the struct sock, the bytes sent (or an error)
// and the flags; the program keeps the sends on watched server ports
// with a positive count. The client counts the bytes it reads on each
// connection, so the thread that sent the last byte of each response is
// found by adding up the sends of its 4-tuple: exact, whatever the
// server's threads do between them.

// ErrNoServeHook says the kernel lacks the tracepoint serving
// attribution needs.
var ErrNoServeHook = errors.New("serving attribution needs the sock_send_length tracepoint (Linux 6.3+)")

// serveHook is the tracepoint the serving program attaches to (typed or
// raw); LBBENCH_KATTR_SERVE_HOOK names another, so a test can see what
// a kernel without it does.
func serveHook() string {
	if h := os.Getenv("LBBENCH_KATTR_SERVE_HOOK"); h != "" {
		return h
	}
	return "sock_send_length"
}

// Sends records, for every connection on its ports, which thread sent
// which bytes, until the client asks (Served) who sent the last byte of
// a response.
type Sends struct {
	*probe
	mu    sync.Mutex
	table map[Tuple]*sendLog
	// misses counts the questions that found no send in time.
	misses atomic.Int64
}

// sendLog is one connection's sends not yet asked about.
type sendLog struct {
	conn  int64 // the notBefore of the connection asking; 0: none yet
	base  int64 // bytes of the connection accounted for
	last  Thread
	have  bool  // last is set
	at    int64 // the latest send's time
	sends []send
}

type send struct {
	at  int64
	n   int64
	who Thread
}

// StartServing loads the serving program and attaches it; ports are the
// server ports watched.
func StartServing(ports ...uint16) (*Sends, error) {
	p, err := startProbe("serve", hook{serveHook(), serveTyped, serveRaw}, ports)
	if errors.Is(err, ErrNoTracing) {
		return nil, fmt.Errorf("%w: %v", ErrNoServeHook, err)
	}
	if err != nil {
		return nil, err
	}
	return &Sends{probe: p, table: map[Tuple]*sendLog{}}, nil
}

// serveRaw runs on every sock_send_length as a raw tracepoint: r7 the
// sock, r9 the bytes sent.
func serveRaw(l layout, ports, events, missed int) asm.Instructions {
	return append(serveArgs(), report(l, ports, events, missed, reportSendRaw)...)
}

// serveTyped is serveRaw as a typed (tp_btf) program: the sock is a BTF
// pointer, so a send on a port not watched (every send of every other
// program, the client's own among them) costs a few loads and one array
// lookup, no helper call.
func serveTyped(l layout, ports, events, missed int) asm.Instructions {
	return append(serveArgs(), report(l, ports, events, missed, reportSendTyped)...)
}

// serveArgs loads the tracepoint's arguments: the sock into r7, the
// count into r9; a failed send (<= 0) ends the program.
func serveArgs() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord),
		asm.JEq.Imm(asm.R7, 0, "out"),
		// The count is an int in a u64 slot, zero-extended: sign-extend it.
		asm.LoadMem(asm.R9, asm.R6, 8, asm.DWord),
		asm.LSh.Imm(asm.R9, 32),
		asm.ArSh.Imm(asm.R9, 32),
		asm.JSLE.Imm(asm.R9, 0, "out"),
	}
}

// serveWait is how long Served waits for sends the ring has not
// delivered yet: the client can read bytes before the sending thread
// has passed the tracepoint, and a sender preempted in between (on a
// busy CPU) passes it only after another thread's time slice, a few ms.
const serveWait = 20 * time.Millisecond

// blindMisses is how many questions wait serveWait in vain, with no send
// seen at all, before Served stops waiting.
const blindMisses = 16

// Served returns who sent byte through (counted from 1 since the
// connection began) of the connection tu that began at notBefore (Mono),
// and forgets what it has answered. last says the client is done with
// the connection. It waits up to serveWait for sends not on the ring
// yet, and answers false if they do not come (or no send was ever seen:
// the server sends by a path the tracepoint does not cover: after a few
// misses with no send ever seen, it answers at once). waited says it
// slept for them: the caller's clock is then stale.
func (t *Sends) Served(tu Tuple, notBefore, through int64, last bool) (who Thread, ok, waited bool) {
	var deadline time.Time
	for {
		// Read the ring first: the response's last send is most often
		// on it and not yet in the table, and looking at an empty ring
		// is two loads.
		t.mu.Lock()
		t.drain()
		who, ok = t.take(tu, notBefore, through)
		if ok || t.recorded.Load() == 0 && t.misses.Load() >= blindMisses {
			if last {
				delete(t.table, tu)
			}
			t.mu.Unlock()
			return who, ok, !deadline.IsZero()
		}
		t.mu.Unlock()
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(serveWait)
		} else if now.After(deadline) {
			// Keep what was counted: a later answer on the connection
			// adds up from there.
			t.misses.Add(1)
			if last {
				t.mu.Lock()
				delete(t.table, tu)
				t.mu.Unlock()
			}
			return Thread{}, false, true
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// take accounts for the sends of tu up to byte through. t.mu is held.
func (t *Sends) take(tu Tuple, notBefore, through int64) (Thread, bool) {
	e := t.table[tu]
	if e == nil {
		return Thread{}, false
	}
	if e.conn != notBefore {
		// The first question about this connection: sends before it
		// began were a former connection's with the same 4-tuple.
		e.conn, e.base, e.have = notBefore, 0, false
		old := notBefore - staleMargin.Nanoseconds()
		i := 0
		for i < len(e.sends) && e.sends[i].at < old {
			i++
		}
		e.sends = append(e.sends[:0], e.sends[i:]...)
	}
	i := 0
	for e.base < through && i < len(e.sends) {
		e.base += e.sends[i].n
		e.last, e.have = e.sends[i].who, true
		i++
	}
	e.sends = append(e.sends[:0], e.sends[i:]...)
	return e.last, e.have && e.base >= through
}

// drain reads every send on the ring now. t.mu is held.
func (t *Sends) drain() {
	for ev, ok := t.next(); ok; ev, ok = t.next() {
		tu, who := t.decode(ev)
		e := t.table[tu]
		if e == nil {
			e = &sendLog{}
			t.table[tu] = e
		}
		e.at = int64(ev.At)
		e.sends = append(e.sends, send{at: e.at, n: int64(ev.Len), who: who})
	}
}

// Drain reads what is on the ring and forgets connections with no send
// for maxAge: other clients', or ones the client gave up on.
func (t *Sends) Drain(maxAge time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drain()
	forgetOlder(t.table, t.Mono(time.Now())-maxAge.Nanoseconds(), func(e *sendLog) int64 { return e.at })
}

// ReadSends reads every send on the ring now, in order, for a watch of
// the port that counts each one.
func (t *Sends) ReadSends() []Send {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Send
	for ev, ok := t.next(); ok; ev, ok = t.next() {
		tu, who := t.decode(ev)
		out = append(out, Send{Tuple: tu, Thread: who, At: int64(ev.At), Bytes: int64(ev.Len)})
	}
	return out
}

// Send is one send as the kernel reported it.
type Send struct {
	Tuple
	Thread
	At    int64 // kernel monotonic nanoseconds
	Bytes int64
}

// pending is how many connections have sends in the table.
func (t *Sends) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.table)
}
