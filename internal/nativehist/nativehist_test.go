package nativehist

import (
	"math"
	"testing"
)

func TestKeyBounds(t *testing.T) {
	for k := MinKey; k <= MaxKey; k++ {
		ub := UpperBound(k)
		if got := Key(ub); got != k {
			t.Fatalf("Key(upper bound of %d = %g) = %d", k, ub, got)
		}
		if got := Key(math.Nextafter(ub, math.Inf(1))); got != k+1 {
			t.Fatalf("Key(just above upper bound of %d) = %d, want %d", k, got, k+1)
		}
	}
	if Key(1) != 0 || Key(2) != 8 || Key(0.5) != -8 {
		t.Fatalf("powers of two: Key(1)=%d Key(2)=%d Key(0.5)=%d", Key(1), Key(2), Key(0.5))
	}
}

func TestCumulativeMatchesObservations(t *testing.T) {
	var c Counts
	vals := []float64{1e-9, 3e-6, 7.62939453125e-06, 1e-4, 0.25, 0.2500001, 3, 5, 1000}
	for _, v := range vals {
		c.Observe(v)
	}
	cum := c.Cumulative()
	for i, b := range ClassicBounds {
		var want uint64
		for _, v := range vals {
			if v <= b {
				want++
			}
		}
		if cum[i] != want {
			t.Errorf("bucket le=%g: %d, want %d", b, cum[i], want)
		}
	}
	if c.Count != uint64(len(vals)) {
		t.Fatalf("count %d", c.Count)
	}
}
