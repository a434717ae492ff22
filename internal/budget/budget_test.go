package budget

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	if _, err := split([]int{0}); err == nil {
		t.Error("one CPU split")
	}
	b, err := split([]int{0, 1, 2, 3, 8})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Servers, []int{0, 1}) || !slices.Equal(b.Clients, []int{2, 3, 8}) || b.Threads() != 3 {
		t.Errorf("split %+v, %d threads", b, b.Threads())
	}
	if s := b.String(); s != "servers on CPU 0,1, clients on CPU 2,3,8" {
		t.Errorf("String %q", s)
	}
	bin, args := Pin(b.Clients, "wrk", "-t", "3")
	if bin != "taskset" || !slices.Equal(args, []string{"-c", "2,3,8", "wrk", "-t", "3"}) {
		t.Errorf("Pin: %s %v", bin, args)
	}
}
