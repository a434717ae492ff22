// Package shm holds the per-worker counters that worker processes publish
// to the supervisor: one fixed-size slot of 64-bit words per worker in a
// memfd that both map. Workers update their slot with atomic adds (a few
// nanoseconds on the hot path, no syscalls, exact); the supervisor reads
// every slot when Prometheus scrapes.
package shm

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/nativehist"
)

// Word indexes inside a slot: counters first, the histogram after them.
const (
	PID         = iota // pid of the process that owns the slot now
	Accepted           // connections the worker accepted (or was handed)
	Open               // connections open now
	Capacity           // connections the worker can hold open (its free descriptors)
	LocalConns         // accepted connections whose SO_INCOMING_CPU was the worker's CPU
	RemoteConns        // accepted connections that arrived on another CPU
	Status1xx          // responses written, by status class: 1xx ... 5xx
	Status2xx
	Status3xx
	Status4xx
	Status5xx
	CloseClient     // connections closed, by reason: the client closed first
	CloseServer     // the response said Connection: close (or HTTP/1.0)
	CloseIdle       // idle longer than the keep-alive timeout
	CloseHeader     // a request head not complete within the header timeout
	CloseBadRequest // a request the parser refused (4xx/5xx, then close)
	CloseDrain      // closed by a stop or a rolling restart
	CloseError      // a read or write error (reset)
	AcceptFDLimit   // accept failed with EMFILE/ENFILE: left queued, retried later
	AcceptNoMemory  // accept failed with ENOBUFS/ENOMEM
	AcceptAborted   // accept failed with ECONNABORTED/EPROTO (the client gave up first)
	HandoffLost     // single: a handed-over connection the worker could not receive
	DgramIn         // UDP: valid request datagrams read
	DgramOut        // UDP: replies sent
	DgramMalformed  // UDP: datagrams too short or not ours, dropped
	DgramSendFailed // UDP: replies the kernel would not take (full buffer)
	DgramBadSource  // UDP: requests from a source no reply can go to (port 0), unanswered
	TLSFull         // TLS handshakes completed in full (a new session)
	TLSResumed      // TLS handshakes that resumed a session (a ticket)
	TLSNotTLS       // TLS handshakes failed, by reason: the client did not speak TLS (plain HTTP)
	TLSTimeout      // the handshake did not complete within the header timeout
	TLSEOF          // the client closed or reset the connection mid-handshake
	TLSBadCert      // the client refused the certificate (a certificate alert)
	TLSAlert        // the client ended the handshake with another alert
	TLSDrain        // cut by a stop or a rolling restart
	TLSOther        // anything else (no version or cipher in common, a malformed hello)
	DurSumNanos     // request-duration histogram: sum in nanoseconds
	DurZero         // observations at or under nativehist.ZeroThreshold
	durBuckets      // first of nativehist.Buckets words

	// Counters is the number of counter words (those before the
	// histograms), which a snapshot keeps.
	Counters = DurSumNanos
)

// The histograms of a slot, each a sum, a zero bucket and
// nativehist.Buckets buckets.
const (
	// RequestDuration: from a request's bytes arriving to its response
	// being written.
	RequestDuration Hist = DurSumNanos
	// HandshakeDuration: a successful TLS handshake, from its start to
	// its end.
	HandshakeDuration Hist = durBuckets + nativehist.Buckets
)

// Hist names a histogram in a slot by its first word.
type Hist int

func (h Hist) sum() int     { return int(h) }
func (h Hist) zero() int    { return int(h) + 1 }
func (h Hist) buckets() int { return int(h) + 2 }

// SlotWords is the slot size in words: 4 KiB, so two workers never share
// a cache line.
const SlotWords = 512

func init() {
	if HandshakeDuration.buckets()+nativehist.Buckets > SlotWords {
		panic("shm: slot too small for the histograms")
	}
}

// Region is the mapped memfd.
type Region struct {
	mem   []byte
	slots int
}

// Create makes a memfd for n slots and maps it. The file is passed to
// workers, which call Map on it.
func Create(n int) (*Region, *os.File, error) {
	fd, err := unix.MemfdCreate("lbbench-counters", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lbbench-counters")
	if err := f.Truncate(int64(n * SlotWords * 8)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("memfd truncate: %w", err)
	}
	r, err := Map(f, n)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return r, f, nil
}

// Map maps a region made by Create.
func Map(f *os.File, n int) (*Region, error) { return MapFD(int(f.Fd()), n) }

// MapFD maps a region made by Create from its descriptor (a worker's
// inherited copy).
func MapFD(fd, n int) (*Region, error) {
	mem, err := unix.Mmap(fd, 0, n*SlotWords*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap counters: %w", err)
	}
	return &Region{mem: mem, slots: n}, nil
}

// Slot returns slot i (0 <= i < n).
func (r *Region) Slot(i int) *Slot {
	if i < 0 || i >= r.slots {
		panic("shm: slot out of range")
	}
	return (*Slot)(unsafe.Pointer(&r.mem[i*SlotWords*8]))
}

// Slots is the number of slots.
func (r *Region) Slots() int { return r.slots }

// Close unmaps the region.
func (r *Region) Close() error { return unix.Munmap(r.mem) }

// Slot is one worker's counters.
type Slot [SlotWords]uint64

// Add adds n to word w.
func (s *Slot) Add(w int, n uint64) { atomic.AddUint64(&s[w], n) }

// Dec subtracts one from word w.
func (s *Slot) Dec(w int) { atomic.AddUint64(&s[w], ^uint64(0)) }

// Load reads word w.
func (s *Slot) Load(w int) uint64 { return atomic.LoadUint64(&s[w]) }

// Store sets word w.
func (s *Slot) Store(w int, v uint64) { atomic.StoreUint64(&s[w], v) }

// Reset zeroes the slot (the supervisor does this before a new worker
// process takes it over).
func (s *Slot) Reset() {
	for i := range s {
		atomic.StoreUint64(&s[i], 0)
	}
}

// Observe records one request duration.
func (s *Slot) Observe(d time.Duration) { s.ObserveIn(RequestDuration, d) }

// ObserveIn records one duration in histogram h.
func (s *Slot) ObserveIn(h Hist, d time.Duration) {
	i, zero := nativehist.Index(d.Seconds())
	if zero {
		atomic.AddUint64(&s[h.zero()], 1)
	} else {
		atomic.AddUint64(&s[h.buckets()+i], 1)
	}
	atomic.AddUint64(&s[h.sum()], uint64(d))
}

// Snapshot copies the counter words.
func (s *Slot) Snapshot() (c [Counters]uint64) {
	for i := range c {
		c[i] = s.Load(i)
	}
	return c
}

// Responses is the number of responses written, of every status class.
func (s *Slot) Responses() uint64 {
	var n uint64
	for w := Status1xx; w <= Status5xx; w++ {
		n += s.Load(w)
	}
	return n
}

// AddHistogramTo adds the slot's request-duration histogram to h.
func (s *Slot) AddHistogramTo(h *nativehist.Counts) { s.AddHistTo(RequestDuration, h) }

// AddHistTo adds the slot's histogram which to h.
func (s *Slot) AddHistTo(which Hist, h *nativehist.Counts) {
	// The count is the sum of the buckets, not a word of its own, so a
	// scrape racing a request still sees a self-consistent histogram.
	h.Sum += float64(s.Load(which.sum())) / 1e9
	z := s.Load(which.zero())
	h.Zero += z
	h.Count += z
	for i := range h.Buckets {
		b := s.Load(which.buckets() + i)
		h.Buckets[i] += b
		h.Count += b
	}
}
