package load

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Schedule hands out the intended send times of an open-loop run. Latency
// is measured from these times, not from when a request actually went
// out, so a server that stalls is charged for every request it delayed
// (no coordinated omission).
type Schedule struct {
	mu       sync.Mutex
	start    time.Time
	interval float64 // seconds between arrivals (mean, for Poisson)
	poisson  bool
	rng      *rand.Rand
	next     float64 // seconds after start
	issued   int64
	limit    int64 // 0: none
	end      time.Time
}

// NewSchedule makes a schedule of rate arrivals per second from start,
// ending at end (zero: no end) or after limit arrivals (0: no limit).
func NewSchedule(start time.Time, rate float64, poisson bool, seed int64, end time.Time, limit int64) *Schedule {
	s := &Schedule{start: start, interval: 1 / rate, poisson: poisson, end: end, limit: limit,
		rng: rand.New(rand.NewPCG(uint64(seed), uint64(seed)>>1|1))}
	if poisson {
		s.next = s.gap()
	}
	return s
}

func (s *Schedule) gap() float64 {
	if s.poisson {
		return s.rng.ExpFloat64() * s.interval
	}
	return s.interval
}

// Next returns the next intended time, or false when the schedule is over.
func (s *Schedule) Next() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 && s.issued >= s.limit {
		return time.Time{}, false
	}
	t := s.start.Add(time.Duration(s.next * float64(time.Second)))
	if !s.end.IsZero() && !t.Before(s.end) {
		return time.Time{}, false
	}
	s.issued++
	s.next += s.gap()
	return t, true
}
