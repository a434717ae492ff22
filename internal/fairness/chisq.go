package fairness

import "math"

// The chi-square p-value is Q(df/2, chi2/2), the regularized upper
// incomplete gamma function. go-moremath's GammaIncComp gives up after a
// fixed number of terms and panics once df reaches a few thousand (a
// server that names thousands of pids, or -workers 20000), so it is
// computed here with an iteration budget that grows with the shape: the
// series and the continued fraction both need O(sqrt(a)) terms near the
// mode (the terms fall like exp(-n²/2a)).

// methodWilsonHilferty names the approximation in Figures.PValueMethod.
const methodWilsonHilferty = "wilson-hilferty"

// chiSquareSurvival returns P(X >= chi2) for X chi-square with df degrees
// of freedom, and "" or the name of the approximation used. The exact
// methods converge for any df a run can produce; the Wilson-Hilferty
// normal approximation is the fallback if they ever do not (its absolute
// error, checked against mpmath over chi2 from 0.01df to 4df, is about
// 0.013/df: 1.3e-3 at df 10, 1.0e-5 at df 1000).
func chiSquareSurvival(chi2, df float64) (float64, string) {
	if q, ok := gammaQ(df/2, chi2/2); ok {
		return q, ""
	}
	return wilsonHilferty(chi2, df), methodWilsonHilferty
}

// gammaQ is the regularized upper incomplete gamma Q(a, x) for a > 0,
// x >= 0, by the power series for P when x < a+1 and Lentz's continued
// fraction for Q otherwise (each converges fast where the other is slow).
func gammaQ(a, x float64) (float64, bool) {
	switch {
	case !(a > 0) || math.IsNaN(x) || math.IsInf(a, 0):
		return math.NaN(), false
	case x <= 0:
		return 1, true
	case math.IsInf(x, 1):
		return 0, true
	}
	lg, _ := math.Lgamma(a)
	logPre := a*math.Log(x) - x - lg
	budget := 200 + int(30*math.Sqrt(a))
	const eps = 1e-16
	if x < a+1 {
		ap, del, sum := a, 1/a, 1/a
		for range budget {
			ap++
			del *= x / ap
			sum += del
			if math.Abs(del) < math.Abs(sum)*eps {
				return clamp01(1 - sum*math.Exp(logPre)), true
			}
		}
		return 0, false
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i <= budget; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			return clamp01(math.Exp(logPre) * h), true
		}
	}
	return 0, false
}

// wilsonHilferty: (X/df)^(1/3) is close to normal with mean 1-2/(9df) and
// variance 2/(9df).
func wilsonHilferty(chi2, df float64) float64 {
	if chi2 <= 0 {
		return 1
	}
	v := 2 / (9 * df)
	z := (math.Cbrt(chi2/df) - (1 - v)) / math.Sqrt(v)
	return clamp01(0.5 * math.Erfc(z/math.Sqrt2))
}

func clamp01(p float64) float64 { return min(max(p, 0), 1) }
