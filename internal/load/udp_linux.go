package load

import (
	"container/heap"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/poll"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/udpwire"
)

// UDP error kinds.
const (
	ErrLost       = "lost"        // a request datagram never answered
	ErrSendFailed = "send_failed" // the kernel would not take a request (full send buffer)
)

// UDPStats is what a UDP run saw beyond latencies and per-worker counts.
type UDPStats struct {
	Flows int `json:"flows"`
	// Sent are the measured requests sent; Received the distinct ones
	// answered; Lost the others, once the run's last replies had
	// Timeout (at most drainFor) to come.
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	Lost     int64 `json:"lost"`
	// Duplicates are replies to a request already answered; Reordered
	// replies older than one already seen on their flow; Malformed
	// datagrams that are not replies.
	Duplicates int64 `json:"duplicates"`
	Reordered  int64 `json:"reordered"`
	Malformed  int64 `json:"malformed"`
	SendFailed int64 `json:"send_failed"`
	// FlowsMultiWorker are flows answered by more than one worker;
	// FirstWorkerShare the share of replies that came from their flow's
	// first worker (1: every flow kept its worker).
	FlowsMultiWorker int64   `json:"flows_multi_worker"`
	FirstWorkerShare float64 `json:"first_worker_share"`
	// Rebinds are the source-port changes made (-rebind-every).
	Rebinds int64 `json:"rebinds"`
	// Where the lost went, as far as this host can see. LoadgenSocketDrops
	// are the replies loadgen's own sockets dropped (a full receive
	// buffer: SK_MEMINFO_DROPS, read before each socket closes): the
	// target answered those. TargetSocketDrops are the datagrams the
	// target's sockets on this host dropped during the run (sock_diag;
	// any sender's, warm-up included); TargetSocketSeen says whether
	// loadgen could see them (not for a target on another host or in
	// another namespace). LostInBetween is what neither socket accounts
	// for: the path, or replies the target could not send.
	LoadgenSocketDrops int64 `json:"loadgen_socket_drops"`
	TargetSocketDrops  int64 `json:"target_socket_drops"`
	TargetSocketSeen   bool  `json:"target_socket_seen"`
	LostInBetween      int64 `json:"lost_in_between"`
}

// openFileLimit is the soft RLIMIT_NOFILE (0: unknown).
func openFileLimit() uint64 {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) != nil || r.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return r.Cur
}

// drainFor bounds how long the run waits, after its last request, for
// replies still on their way.
const drainFor = 500 * time.Millisecond

// udpFlow is one flow: a connected socket from one source port (a new
// one after each rebinding), its request ids and what answered them.
type udpFlow struct {
	id   uint64
	src  netip.Addr
	fd   int
	old  []int // sockets of earlier source ports, kept a period for late replies
	next time.Time
	idx  int // in the loop's schedule heap
	seq  uint64
	// answered holds a bit per request id.
	answered []uint64
	// A reply's latency counts from loadgen's own record of its request,
	// never from the stamp the server echoes (which a server may get
	// wrong). Open loop: request id was intended at t0 + id*period.
	// Closed loop: sentAt[id&(len-1)] holds its send time, for the last
	// len(sentAt) requests; an older reply came after its request timed
	// out twice over and stays lost.
	t0       time.Time
	sentAt   []time.Duration // since the loop's start
	measured bool            // firstMeasured is set
	// firstMeasured is the first id sent in the measured part.
	firstMeasured uint64
	maxSeen       uint64
	// inFlight and lastSend: the closed loop's window.
	inFlight  int
	lastSend  time.Time
	first     uint32 // the pid that answered first (0: none yet)
	multi     bool
	replies   int64
	fromFirst int64
}

// udpLoop drives a share of the flows from one goroutine: one epoll set,
// sends at their intended times (open loop) or as replies come back
// (closed loop, -window), replies read in batches.
type udpLoop struct {
	set        *poll.Set // with an eventfd that wakes the loop when the run ends
	e          *engine
	sh         *shard
	flows      []*udpFlow
	byFD       map[int]*udpFlow
	sched      flowHeap
	now        time.Time
	start      time.Time
	period     time.Duration // open loop: between two requests of one flow
	nextRebind time.Time
	recv       [batchSize]unix.Mmsghdr
	iov        [batchSize]unix.Iovec
	bufs       [batchSize][64]byte
	req        [udpwire.RequestSize]byte
	st         UDPStats
	inFlight   int64
	oldest     time.Time
}

const batchSize = 64

// sentRing is the number of send times a closed-loop flow keeps: a power
// of two at least four windows, so a reply within two timeouts (each
// re-sends a window) still finds its request.
func sentRing(window int) int {
	n := 4
	for n < 4*window {
		n *= 2
	}
	return n
}

func (e *engine) makeUDPLoops() error {
	e.targetDropsBefore, e.targetDropsSeen = e.targetSocketDrops()
	n := min(e.o.Flows, runtime.GOMAXPROCS(0))
	for i := range n {
		set, err := poll.NewWaker(loopEvents)
		if err != nil {
			return err
		}
		l := &udpLoop{set: set, e: e, sh: newShard(), byFD: map[int]*udpFlow{}, start: e.measureStart.Add(-e.o.Warmup)}
		for k := range l.iov {
			l.iov[k] = unix.Iovec{Base: &l.bufs[k][0]}
			l.iov[k].SetLen(len(l.bufs[k]))
			l.recv[k].Hdr.Iov, l.recv[k].Hdr.Iovlen = &l.iov[k], 1
		}
		if e.o.Rate > 0 {
			// Never 0: a flow whose next send does not move would be
			// due forever (Validate bounds the rate, this the rounding).
			l.period = max(time.Duration(float64(e.o.Flows)/e.o.Rate*1e9), time.Nanosecond)
		}
		for f := i; f < e.o.Flows; f += n {
			fl := &udpFlow{id: uint64(f) + 1, fd: -1}
			if len(e.o.Src) > 0 {
				fl.src = e.o.Src[f%len(e.o.Src)]
			}
			// Flows start evenly staggered over one period.
			fl.next = l.start.Add(time.Duration(f) * l.period / time.Duration(e.o.Flows))
			fl.t0 = fl.next
			if e.o.Rate == 0 {
				fl.sentAt = make([]time.Duration, sentRing(e.o.Window))
			}
			l.flows = append(l.flows, fl)
		}
		e.loops = append(e.loops, l)
	}
	return nil
}

func (l *udpLoop) stats() *shard                { return l.sh }
func (l *udpLoop) cutCount() (int64, time.Time) { return l.inFlight, l.oldest }

// closeSet closes the flows' sockets and the set.
func (l *udpLoop) closeSet() {
	for _, f := range l.flows {
		if f.fd >= 0 {
			unix.Close(f.fd)
			f.fd = -1
		}
		for _, fd := range f.old {
			unix.Close(fd)
		}
		f.old = nil
	}
	l.set.Close()
}

// poke wakes the loop (the run ended).
func (l *udpLoop) poke() { l.set.Wake() }

// open gives flow f a socket of its own, connected to the target, from
// a new source port.
func (l *udpLoop) open(f *udpFlow) error {
	e := l.e
	fd, err := unix.Socket(e.family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20) // replies must not be lost here
	if f.src.IsValid() {
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(f.src, 0))); err != nil {
			unix.Close(fd)
			return err
		}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(e.remoteSA), e.remoteLen); e != 0 {
		unix.Close(fd)
		return e
	}
	if err := l.set.Add(fd, unix.EPOLLIN); err != nil {
		unix.Close(fd)
		return err
	}
	if f.fd >= 0 {
		f.old = append(f.old, f.fd)
	}
	f.fd = fd
	l.byFD[fd] = f
	return nil
}

func (l *udpLoop) run() {
	e := l.e
	l.now = time.Now()
	for _, f := range l.flows {
		if err := l.open(f); err != nil {
			l.sh.recordErr(ErrOther)
			continue
		}
		if e.o.Rate > 0 {
			heap.Push(&l.sched, f)
		}
	}
	if e.o.RebindEvery > 0 {
		l.nextRebind = l.start.Add(e.o.RebindEvery)
	}
	if e.o.Rate == 0 {
		for _, f := range l.flows {
			for range e.o.Window {
				l.send(f, l.now)
			}
		}
	}
	drainUntil := time.Time{}
	for {
		if e.stopped.Load() && drainUntil.IsZero() {
			drainUntil = l.now.Add(min(e.o.Timeout, drainFor))
		}
		if !drainUntil.IsZero() && (!l.now.Before(drainUntil) || l.allAnswered()) {
			break
		}
		timeout := 10 * time.Millisecond
		if len(l.sched) > 0 && drainUntil.IsZero() {
			timeout = min(timeout, max(l.sched[0].next.Sub(l.now), 0))
		}
		n, err := l.set.Wait(timeout)
		l.now = time.Now()
		if err == nil {
			for i := range n {
				if ev := l.set.Events[i]; !l.set.Woken(ev.Fd) {
					l.read(int(ev.Fd))
				}
			}
		} else {
			runtime.Gosched()
		}
		if drainUntil.IsZero() {
			l.timers()
		}
	}
	l.finish()
}

// timers sends what is due: open-loop requests whose time has come (all
// of them, late or not: their latency counts from the intended time),
// closed-loop requests whose answer timed out; and rebinds.
func (l *udpLoop) timers() {
	e := l.e
	// A loop that fell behind sends in rounds of maxDue, so replies are
	// read and a stop is seen between them; what is late still counts
	// from its intended time.
	for due := 0; due < maxDue && !e.stopped.Load() && len(l.sched) > 0 && !l.sched[0].next.After(l.now); due++ {
		f := l.sched[0]
		if !e.end.IsZero() && !f.next.Before(e.end) {
			heap.Pop(&l.sched)
			continue
		}
		l.send(f, f.next)
		f.next = f.next.Add(l.period)
		heap.Fix(&l.sched, 0)
	}
	if e.o.Rate == 0 {
		for _, f := range l.flows {
			if f.inFlight > 0 && l.now.Sub(f.lastSend) > e.o.Timeout {
				f.inFlight = 0 // counted lost at the end
				for range e.o.Window {
					l.send(f, l.now)
				}
			}
		}
	}
	if !l.nextRebind.IsZero() && !l.now.Before(l.nextRebind) {
		l.nextRebind = l.nextRebind.Add(e.o.RebindEvery)
		for _, f := range l.flows {
			// Sockets of the port before last go; the last one stays a
			// period for replies still on their way to it.
			for _, fd := range f.old {
				delete(l.byFD, fd)
				l.st.LoadgenSocketDrops += socketDrops(fd)
				unix.Close(fd)
			}
			f.old = nil
			if l.open(f) == nil {
				l.st.Rebinds++
			}
		}
	}
}

// maxDue bounds the open-loop sends of one timers round.
const maxDue = 1024

// measured says whether a request intended at t is measured.
func (l *udpLoop) measured(t time.Time) bool {
	e := l.e
	return !t.Before(e.measureStart) && (e.end.IsZero() || t.Before(e.end))
}

// send sends flow f's next request, intended at t.
func (l *udpLoop) send(f *udpFlow, t time.Time) {
	e := l.e
	if e.stopped.Load() || (!e.end.IsZero() && !t.Before(e.end)) {
		return
	}
	measured := l.measured(t)
	if measured && e.o.Requests > 0 {
		// -n: a ticket per measured request, taken before it is sent.
		if n := e.tickets.Add(1); n >= e.o.Requests {
			e.stopped.Store(true)
			if n > e.o.Requests {
				return
			}
		}
	}
	id := f.seq
	f.seq++
	if f.sentAt != nil {
		f.sentAt[id&uint64(len(f.sentAt)-1)] = t.Sub(l.start)
	}
	if measured && !f.measured {
		f.measured, f.firstMeasured = true, id
	}
	b := udpwire.PutRequest(l.req[:], udpwire.Request{Flow: f.id, ID: id, Stamp: uint64(t.Sub(l.start))})
	_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(f.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if !measured {
		return
	}
	if errno != 0 {
		l.st.SendFailed++
		l.sh.recordErr(ErrSendFailed)
		return
	}
	l.st.Sent++
	f.inFlight++
	f.lastSend = l.now
	if need := int(id/64) + 1; len(f.answered) < need {
		f.answered = append(f.answered, make([]uint64, need-len(f.answered))...)
	}
}

// read takes every reply waiting on fd.
func (l *udpLoop) read(fd int) {
	f := l.byFD[fd]
	if f == nil {
		return
	}
	for {
		for k := range l.recv {
			l.recv[k].Len = 0
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&l.recv[0])), batchSize, unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.ECONNREFUSED {
			l.sh.recordErr(ErrRefused) // an ICMP port unreachable: nothing listens
			continue
		}
		if errno != 0 {
			return
		}
		now := time.Now()
		for k := range int(r) {
			l.reply(f, l.bufs[k][:l.recv[k].Len], now)
		}
		if int(r) < batchSize {
			return
		}
	}
}

// reply counts one datagram that came back on flow f.
func (l *udpLoop) reply(f *udpFlow, b []byte, now time.Time) {
	rep, ok := udpwire.ParseReply(b)
	if !ok || rep.Flow != f.id {
		l.st.Malformed++
		return
	}
	if rep.ID >= f.seq {
		l.st.Malformed++ // an id never sent
		return
	}
	var intended time.Time
	switch {
	case f.sentAt == nil:
		intended = f.t0.Add(time.Duration(rep.ID) * l.period)
	case f.seq-rep.ID <= uint64(len(f.sentAt)):
		intended = l.start.Add(f.sentAt[rep.ID&uint64(len(f.sentAt)-1)])
	default:
		return // its send time is gone: far too late, counted lost
	}
	if !f.measured || rep.ID < f.firstMeasured {
		if f.inFlight > 0 {
			f.inFlight--
		}
		if l.e.o.Rate == 0 && !l.e.stopped.Load() {
			l.send(f, now)
		}
		return
	}
	w, bit := rep.ID/64, uint64(1)<<(rep.ID%64)
	if w >= uint64(len(f.answered)) {
		l.st.Malformed++ // not a measured id
		return
	}
	if f.answered[w]&bit != 0 {
		l.st.Duplicates++
		return
	}
	f.answered[w] |= bit
	l.st.Received++
	if rep.ID < f.maxSeen {
		l.st.Reordered++
	}
	f.maxSeen = max(f.maxSeen, rep.ID)
	if f.inFlight > 0 {
		f.inFlight--
	}
	first := f.first == 0
	if first {
		f.first = rep.PID
	}
	if rep.PID != f.first {
		f.multi = true
	} else {
		f.fromFirst++
	}
	f.replies++
	lat := now.Sub(intended)
	x := &sample{pid: uint64(rep.PID), workerID: uint64(rep.Worker) + 1, newConn: first, local: -1,
		latency: lat, uncorrected: lat, ttfb: lat}
	l.sh.record(x)
	if o := l.e.o.Observe; o != nil {
		o(lat.Seconds())
	}
	if l.e.o.Rate == 0 {
		l.send(f, now)
	}
}

// allAnswered says whether every measured request has its reply.
func (l *udpLoop) allAnswered() bool { return l.st.Received+l.st.SendFailed >= l.st.Sent }

// finish counts the losses and the flows' consistency.
func (l *udpLoop) finish() {
	l.st.Flows = len(l.flows)
	l.st.Lost = l.st.Sent - l.st.Received
	var replies, fromFirst int64
	for _, f := range l.flows {
		if f.fd >= 0 {
			l.st.LoadgenSocketDrops += socketDrops(f.fd)
		}
		for _, fd := range f.old {
			l.st.LoadgenSocketDrops += socketDrops(fd)
		}
		if f.multi {
			l.st.FlowsMultiWorker++
		}
		replies += f.replies
		fromFirst += f.fromFirst
	}
	if replies > 0 {
		l.st.FirstWorkerShare = float64(fromFirst) / float64(replies)
	}
	l.sh.mu.Lock()
	l.sh.total.errs[kindIndex(ErrLost)] += l.st.Lost
	l.sh.mu.Unlock()
}

// mergeUDP sums the loops' UDP statistics.
func (e *engine) mergeUDP() *UDPStats {
	if e.o.Proto != ProtoUDP {
		return nil
	}
	out := &UDPStats{}
	for _, el := range e.loops {
		out.Add(&el.(*udpLoop).st)
	}
	if after, ok := e.targetSocketDrops(); ok && e.targetDropsSeen {
		out.TargetSocketSeen = true
		out.TargetSocketDrops = max(after-e.targetDropsBefore, 0)
	}
	out.shareLoss()
	return out
}

// Add adds the counts of o, a run over other flows (another loop or
// another generator), to s. The first-worker share is weighted by the
// replies each side received, which is exact because flows are never
// shared between the two.
func (s *UDPStats) Add(o *UDPStats) {
	replies := s.Received + o.Received
	if replies > 0 {
		s.FirstWorkerShare = (s.FirstWorkerShare*float64(s.Received) + o.FirstWorkerShare*float64(o.Received)) / float64(replies)
	}
	s.Flows += o.Flows
	s.Sent += o.Sent
	s.Received += o.Received
	s.Lost += o.Lost
	s.Duplicates += o.Duplicates
	s.Reordered += o.Reordered
	s.Malformed += o.Malformed
	s.SendFailed += o.SendFailed
	s.FlowsMultiWorker += o.FlowsMultiWorker
	s.Rebinds += o.Rebinds
	s.LoadgenSocketDrops += o.LoadgenSocketDrops
	// Generators on one host watch the same target sockets over the same
	// time: their drop counts overlap, so the larger is the figure.
	s.TargetSocketDrops = max(s.TargetSocketDrops, o.TargetSocketDrops)
	s.TargetSocketSeen = s.TargetSocketSeen || o.TargetSocketSeen
	s.shareLoss()
}

// LossRatio is the share of datagrams sent that got no reply.
func (s *UDPStats) LossRatio() float64 {
	if s.Sent == 0 {
		return 0
	}
	return float64(s.Lost) / float64(s.Sent)
}

// shareLoss splits the lost datagrams between loadgen's sockets, the
// target's and the path in between, in that order, so the parts never
// exceed the loss: loadgen's drops may include replies to warm-up
// requests, the target's those of other senders.
func (s *UDPStats) shareLoss() {
	rest := s.Lost
	rest -= min(s.LoadgenSocketDrops, rest)
	rest -= min(s.TargetSocketDrops, rest)
	s.LostInBetween = rest
}

// targetSocketDrops sums the drops of the UDP sockets bound to the
// target's address on this host. Not with -netns: sock_diag answers for
// loadgen's own namespace.
func (e *engine) targetSocketDrops() (int64, bool) {
	if e.o.NetNS != "" {
		return 0, false
	}
	ls, err := sockets.ConflictsUDP(e.remote)
	if err != nil || len(ls) == 0 {
		return 0, false
	}
	var n int64
	for _, l := range ls {
		n += int64(l.Drops)
	}
	return n, true
}

// socketDrops is what the kernel dropped for socket fd (SK_MEMINFO_DROPS
// of SO_MEMINFO), 0 if it cannot say.
func socketDrops(fd int) int64 {
	var m [unix.SK_MEMINFO_VARS]uint32
	n := uint32(unsafe.Sizeof(m))
	_, _, errno := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&m[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 || n < 4*(unix.SK_MEMINFO_DROPS+1) {
		return 0
	}
	return int64(m[unix.SK_MEMINFO_DROPS])
}

// flowHeap orders flows by their next intended send.
type flowHeap []*udpFlow

func (h flowHeap) Len() int           { return len(h) }
func (h flowHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h flowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *flowHeap) Push(x any)        { f := x.(*udpFlow); f.idx = len(*h); *h = append(*h, f) }
func (h *flowHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	*h = old[:len(old)-1]
	return f
}
