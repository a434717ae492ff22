package shm

import (
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/nativehist"
)

// TestTwoMappings: a worker's mapping and the supervisor's see the same
// counters, which is how counts cross processes.
func TestTwoMappings(t *testing.T) {
	r, f, err := Create(3)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer r.Close()
	w, err := MapFD(int(f.Fd()), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ws := w.Slot(1)
	ws.Add(Accepted, 3)
	ws.Add(Status2xx, 5)
	ws.Add(Status4xx, 2)
	ws.Add(Open, 1)
	ws.Dec(Open)
	ws.Observe(3 * time.Millisecond)
	ws.Observe(0) // the zero bucket

	s := r.Slot(1)
	if got := s.Load(Accepted); got != 3 {
		t.Errorf("accepted %d through the other mapping", got)
	}
	if s.Responses() != 7 || s.Load(Open) != 0 {
		t.Errorf("responses %d open %d", s.Responses(), s.Load(Open))
	}
	snap := s.Snapshot()
	if snap[Status4xx] != 2 || len(snap) != Counters {
		t.Errorf("snapshot %v", snap[:Counters])
	}
	var h nativehist.Counts
	s.AddHistogramTo(&h)
	if h.Count != 2 || h.Zero != 1 || h.Sum < 0.003 || h.Sum > 0.0031 {
		t.Errorf("histogram count %d zero %d sum %v", h.Count, h.Zero, h.Sum)
	}
	if r.Slot(0).Load(Accepted) != 0 || r.Slot(2).Load(Accepted) != 0 {
		t.Error("a neighbouring slot changed")
	}
	s.Reset()
	if ws.Load(Accepted) != 0 || ws.Load(DurZero) != 0 {
		t.Error("reset did not clear the slot")
	}
}

func TestSlotBounds(t *testing.T) {
	r, f, err := Create(1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer func() {
		if recover() == nil {
			t.Error("slot 1 of 1 did not panic")
		}
	}()
	r.Slot(1)
}
