// Package fairness computes how evenly counts are spread over workers:
// max/mean and min/mean, coefficient of variation, Jain's index and a
// chi-square test against an even spread.
package fairness

import (
	"math"
	"math/rand/v2"
)

// Figures describes one distribution of counts over workers.
type Figures struct {
	// Workers is how many workers the counts cover (zeros included).
	Workers int     `json:"workers"`
	Total   float64 `json:"total"`
	// MaxOverMean is >= 1; 1 is perfectly even.
	MaxOverMean float64 `json:"max_over_mean"`
	// MinOverMean is <= 1; 0 means a worker got nothing.
	MinOverMean float64 `json:"min_over_mean"`
	// CoV is the population standard deviation over the mean.
	CoV float64 `json:"cov"`
	// Jain is (sum x)^2 / (n sum x^2): 1 when even, 1/n when one worker
	// takes everything.
	Jain float64 `json:"jain"`
	// ChiSquare is sum (x-E)^2/E with E = total/n, on n-1 degrees of
	// freedom; PValue is the chance of a spread at least this uneven if
	// every worker were equally likely.
	ChiSquare float64 `json:"chi_square"`
	PValue    float64 `json:"p_value"`
	// PValueMethod is empty when PValue is exact to about 1e-12, and
	// names the approximation otherwise.
	PValueMethod string `json:"p_value_method,omitempty"`
}

// Compute returns the figures for counts. With fewer than one worker or a
// zero total, only Workers and Total are set and the ratios are NaN-free
// zeros, except Jain and the ratios, which are 1 (nothing to be unfair
// about).
func Compute(counts []float64) Figures {
	f := Figures{Workers: len(counts)}
	n := float64(len(counts))
	var sum, sumSq float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range counts {
		sum += x
		sumSq += x * x
		lo, hi = min(lo, x), max(hi, x)
	}
	f.Total = sum
	if len(counts) == 0 || sum == 0 {
		f.MaxOverMean, f.MinOverMean, f.Jain, f.PValue = 1, 1, 1, 1
		return f
	}
	mean := sum / n
	f.MaxOverMean = hi / mean
	f.MinOverMean = lo / mean
	variance := max(sumSq/n-mean*mean, 0)
	f.CoV = math.Sqrt(variance) / mean
	f.Jain = sum * sum / (n * sumSq)
	for _, x := range counts {
		d := x - mean
		f.ChiSquare += d * d / mean
	}
	f.PValue = 1
	if len(counts) > 1 {
		f.PValue, f.PValueMethod = chiSquareSurvival(f.ChiSquare, n-1)
	}
	return f
}

// BallsIntoBins is what uniform hashing gives: F flows thrown into N
// workers independently and uniformly (as a 4-tuple hash over a
// reuseport group does), the mean and standard deviation of max/mean of
// the workers' loads, by simulation (trials throws, a fixed seed: the
// same answer every time).
func BallsIntoBins(flows, workers, trials int) (mean, sd float64) {
	if flows < 1 || workers < 1 || trials < 1 {
		return 1, 0
	}
	rng := rand.New(rand.NewPCG(uint64(flows), uint64(workers)))
	load := make([]int, workers)
	var sum, sumSq float64
	for range trials {
		clear(load)
		top := 0
		for range flows {
			b := rng.IntN(workers)
			load[b]++
			top = max(top, load[b])
		}
		x := float64(top) * float64(workers) / float64(flows)
		sum += x
		sumSq += x * x
	}
	mean = sum / float64(trials)
	return mean, math.Sqrt(max(sumSq/float64(trials)-mean*mean, 0))
}
