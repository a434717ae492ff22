package binding

import (
	"errors"
	"math"
	"testing"
)

// check runs a case and asserts the kernel did what the claim says: the
// figure equals its expectation within tol.
func check(t *testing.T, f Figure, err error, tol float64) {
	t.Helper()
	if errors.Is(err, ErrSkipped) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Log(f.Note)
	if math.Abs(f.Value-f.Expect) > tol {
		t.Errorf("%s = %.3f, want %.3f (±%.3f): %s", f.Unit, f.Value, f.Expect, tol, f.Note)
	}
}

func TestOtherUIDCannotJoin(t *testing.T) {
	uid, err := NobodyUID()
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	f, err := OtherUID(uid)
	check(t, f, err, 0)
}

func TestStrayTakesItsShare(t *testing.T) {
	// 2 workers + 1 stray, 1200 connections: the stray's share is
	// binomial around 1/3 with sd ~0.014; 0.08 is over 5 sd.
	f, err := Stray(2, 1200)
	check(t, f, err, 0.08)
}

func TestReuseAddrRebindsOverTimeWait(t *testing.T) {
	f, err := ReuseAddrRebind()
	check(t, f, err, 0)
}

func TestReuseAddrDoesNotShareAListener(t *testing.T) {
	f, err := ReuseAddrSecondListener()
	check(t, f, err, 0)
}

func TestSpecificAddressWins(t *testing.T) {
	for _, udp := range []bool{false, true} {
		f, err := WildcardSpecific(udp, 50)
		check(t, f, err, 0)
	}
}

func TestDualStack(t *testing.T) {
	for _, v6only := range []bool{false, true} {
		f, err := DualStack(v6only)
		check(t, f, err, 0)
	}
}

func TestUnicastReachesOneMulticastAll(t *testing.T) {
	f, err := Unicast(3, 300)
	check(t, f, err, 0)
	f, err = Multicast(3, 300)
	check(t, f, err, 0)
	f, err = Broadcast(3, 300)
	check(t, f, err, 0)
}
