// Package nativehist maps durations to the buckets of a Prometheus native
// histogram of schema 3 (growth factor 2^(1/8) ~ 1.09), on a fixed range,
// so that separate processes can count into plain integer arrays and the
// supervisor can expose the sum as both a native and a classic histogram.
// Classic bounds are powers of two, which are also native bounds, so both
// forms are exact views of the same counts.
package nativehist

import (
	"math"
	"sort"
)

const (
	// Schema is the native-histogram schema: 2^Schema buckets per
	// power of two.
	Schema = 3
	// MinKey and MaxKey are the native bucket keys kept: bucket k holds
	// (2^((k-1)/8), 2^(k/8)] seconds, so the range is 1 µs to 64 s.
	// Larger values are counted in the top bucket.
	MinKey = -8*20 + 1
	MaxKey = 8 * 6
	// Buckets is the number of kept buckets.
	Buckets = MaxKey - MinKey + 1
)

// ZeroThreshold is the width of the zero bucket: 2^-20 s (about 1 µs).
var ZeroThreshold = math.Ldexp(1, -20)

// bounds[j] = 2^(j/8 - 1), the bucket bounds within one power of two,
// as Frexp normalises into [0.5, 1).
var bounds = func() []float64 {
	b := make([]float64, 1<<Schema)
	for j := range b {
		b[j] = math.Exp2(float64(j)/(1<<Schema) - 1)
	}
	return b
}()

// Key returns the native bucket key of v > 0.
func Key(v float64) int {
	frac, exp := math.Frexp(v)
	return (exp-1)<<Schema + sort.SearchFloat64s(bounds, frac)
}

// Index returns the position of v (seconds) in a Counts.Buckets array, or
// zero=true when v falls in the zero bucket.
func Index(v float64) (i int, zero bool) {
	if v <= ZeroThreshold {
		return 0, true
	}
	k := min(Key(v), MaxKey)
	return k - MinKey, false
}

// UpperBound is the upper bound of bucket key k.
func UpperBound(k int) float64 { return math.Exp2(float64(k) / (1 << Schema)) }

// Counts is a histogram in the fixed range.
type Counts struct {
	Count   uint64
	Sum     float64
	Zero    uint64
	Buckets [Buckets]uint64
}

// Observe adds one value in seconds.
func (c *Counts) Observe(v float64) {
	c.Count++
	c.Sum += v
	if i, zero := Index(v); zero {
		c.Zero++
	} else {
		c.Buckets[i]++
	}
}

// Add adds o into c.
func (c *Counts) Add(o *Counts) {
	c.Count += o.Count
	c.Sum += o.Sum
	c.Zero += o.Zero
	for i := range c.Buckets {
		c.Buckets[i] += o.Buckets[i]
	}
}

// ClassicBounds are the classic bucket bounds: powers of two from 2^-17 s
// (7.6 µs) to 4 s, each one also a native bucket bound.
var ClassicBounds = func() []float64 {
	var b []float64
	for e := -17; e <= 2; e++ {
		b = append(b, math.Ldexp(1, e))
	}
	return b
}()

// Cumulative returns the cumulative counts for ClassicBounds.
func (c *Counts) Cumulative() []uint64 {
	out := make([]uint64, len(ClassicBounds))
	acc := c.Zero
	i := 0
	for bi, b := range ClassicBounds {
		limit := Key(b) // exact: b is a power of two
		for ; i < Buckets && MinKey+i <= limit; i++ {
			acc += c.Buckets[i]
		}
		out[bi] = acc
	}
	return out
}
