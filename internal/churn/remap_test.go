package churn

import (
	"math"
	"testing"
)

func TestExpectations(t *testing.T) {
	// 1 -> 2: half move under either scheme.
	if ExpectedModulo(1) != 0.5 || math.Abs(ExpectedScale(1)-0.5) > 1e-12 {
		t.Fatalf("n=1: %v %v", ExpectedModulo(1), ExpectedScale(1))
	}
	// 2 -> 3 with reciprocal_scale: [1/3,1/2) and [2/3,1) move: 1/2.
	if math.Abs(ExpectedScale(2)-0.5) > 1e-12 {
		t.Fatalf("scale n=2: %v", ExpectedScale(2))
	}
}

// TestRemapMeasured: TCP connections and UDP datagrams move between the
// sockets of a growing group as reciprocal_scale predicts.
func TestRemapMeasured(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, n := range []int{1, 3} {
			got, err := Remap(proto, n, 400, 21000)
			if err != nil {
				t.Fatal(err)
			}
			// 400 tuples: a binomial sd of at most 0.025; allow 4 sd.
			if want := ExpectedScale(n); math.Abs(got-want) > 0.1 {
				t.Errorf("%s n=%d: %.3f moved, reciprocal_scale predicts %.3f", proto, n, got, want)
			}
			t.Logf("%s n=%d -> %d: %.3f moved (reciprocal_scale %.3f, modulo %.3f)", proto, n, n+1, got, ExpectedScale(n), ExpectedModulo(n))
		}
	}
}
