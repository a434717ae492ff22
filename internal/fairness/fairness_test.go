package fairness

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }

func TestEven(t *testing.T) {
	f := Compute([]float64{250, 250, 250, 250})
	if !near(f.Jain, 1) || !near(f.MaxOverMean, 1) || !near(f.MinOverMean, 1) || f.CoV != 0 || f.ChiSquare != 0 || !near(f.PValue, 1) {
		t.Fatalf("%+v", f)
	}
}

func TestOneTakesAll(t *testing.T) {
	f := Compute([]float64{1000, 0, 0, 0})
	if !near(f.Jain, 0.25) || !near(f.MaxOverMean, 4) || f.MinOverMean != 0 || !near(f.CoV, math.Sqrt(3)) {
		t.Fatalf("%+v", f)
	}
	// chi2 = (750^2 + 3*250^2)/250 = 3000 on 3 df: p is tiny.
	if !near(f.ChiSquare, 3000) || f.PValue > 1e-100 {
		t.Fatalf("chi2 %v p %v", f.ChiSquare, f.PValue)
	}
}

func TestKnownChiSquare(t *testing.T) {
	// 2:1 between two workers over 300: chi2 = (50^2+50^2)/150 = 33.33 on
	// 1 df; p = erfc(sqrt(chi2/2)).
	f := Compute([]float64{200, 100})
	if !near(f.ChiSquare, 100.0/3) || !near(f.PValue, math.Erfc(math.Sqrt(50.0/3))) {
		t.Fatalf("chi2 %v p %v", f.ChiSquare, f.PValue)
	}
	if !near(f.Jain, 300.0*300/(2*(200*200+100*100))) || !near(f.MaxOverMean, 4.0/3) || !near(f.MinOverMean, 2.0/3) {
		t.Fatalf("%+v", f)
	}
	// Chi-square 3.84 on 1 df is the classic p = 0.05.
	g := Compute([]float64{50 + math.Sqrt(3.841458820694124*25), 50 - math.Sqrt(3.841458820694124*25)})
	if math.Abs(g.PValue-0.05) > 1e-6 {
		t.Fatalf("p %v, want 0.05", g.PValue)
	}
}

func TestEmpty(t *testing.T) {
	for _, c := range [][]float64{nil, {0, 0}} {
		f := Compute(c)
		if f.Jain != 1 || f.MaxOverMean != 1 || f.PValue != 1 {
			t.Fatalf("%v: %+v", c, f)
		}
	}
}

func TestBallsIntoBins(t *testing.T) {
	// Two flows on two workers: together half the time (max/mean 2),
	// apart the other half (1).
	if m, sd := BallsIntoBins(2, 2, 200000); math.Abs(m-1.5) > 0.01 || math.Abs(sd-0.5) > 0.01 {
		t.Errorf("2 into 2: mean %v sd %v, want 1.5 and 0.5", m, sd)
	}
	if m, _ := BallsIntoBins(1000, 2, 20000); m < 1 || m > 1.05 {
		t.Errorf("many flows spread evenly: %v", m)
	}
	if m, _ := BallsIntoBins(1, 4, 1000); m != 4 {
		t.Errorf("one flow on four workers: %v, want 4", m)
	}
}
