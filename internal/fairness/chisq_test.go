package fairness

import (
	"math"
	"testing"
)

// Reference values of Q(a, x) computed with mpmath 1.3.0 at 40 digits:
// mpmath.gammainc(a, x, mpmath.inf, regularized=True).
var gammaQRef = []struct{ a, x, q float64 }{
	{0.5, 0.5, 0.3173105078629141},
	{1, 3, 0.049787068367863943},
	{4.5, 2, 0.91141252683167917},
	{10, 100, 1.1253473960842734e-31},
	{100, 10, 1.0},
	{2499.5, 2600, 0.023266893410971886},
	{9999.5, 9999.5, 0.49867015841355263},
	{9999.5, 10500, 4.1687927137397122e-7},
	{9999.5, 9500, 0.99999980874442386},
	{9999.5, 12000, 3.0364379111452925e-79},
	{50000, 50100, 0.32693001062380459},
	{1e6, 1e6 + 1500, 0.066861104235897762},
	{1e6, 1e6 - 3000, 0.9986618958326864},
}

func TestGammaQAgainstMpmath(t *testing.T) {
	for _, c := range gammaQRef {
		q, ok := gammaQ(c.a, c.x)
		if !ok || math.Abs(q-c.q) > 1e-9*c.q+1e-13 {
			t.Errorf("Q(%v, %v) = %v (ok %v), want %v", c.a, c.x, q, ok, c.q)
		}
	}
}

// 20000 workers (the -workers 20000 that made GammaIncComp panic), every
// shape of spread: the p-value is exact, in [0, 1], and falls as the
// spread gets less even.
func TestManyWorkersPValue(t *testing.T) {
	for _, n := range []int{5000, 20000, 200000} {
		prev := 2.0
		for _, skew := range []float64{0, 0.01, 0.03, 0.1, 1} {
			counts := make([]float64, n)
			for i := range counts {
				counts[i] = 100
				if i%2 == 0 {
					counts[i] += 100 * skew
				}
			}
			f := Compute(counts)
			if f.PValueMethod != "" || !(f.PValue >= 0 && f.PValue <= 1) || f.PValue > prev {
				t.Fatalf("n %d skew %v: p %v method %q (previous %v)", n, skew, f.PValue, f.PValueMethod, prev)
			}
			prev = f.PValue
		}
		// Two requests over n workers: nearly every count is 0.
		counts := make([]float64, n)
		counts[0], counts[1] = 1, 1
		if f := Compute(counts); !(f.PValue >= 0 && f.PValue <= 1) {
			t.Fatalf("n %d sparse: %+v", n, f)
		}
	}
}

// The fallback approximation, checked against the same mpmath values for
// df >= 1000, holds to the 0.013/df stated in chiSquareSurvival.
func TestWilsonHilfertyAccuracy(t *testing.T) {
	for _, c := range gammaQRef {
		df := 2 * c.a
		if df < 1000 {
			continue
		}
		if p := wilsonHilferty(2*c.x, df); math.Abs(p-c.q) > 0.013/df {
			t.Errorf("df %v chi2 %v: %v, want %v within %v", df, 2*c.x, p, c.q, 0.013/df)
		}
	}
}
