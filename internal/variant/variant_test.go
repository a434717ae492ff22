package variant

import "testing"

func TestWords(t *testing.T) {
	for _, c := range []struct {
		l    List
		want string
	}{
		{nil, ""},
		{List{"tcp"}, "tcp"},
		{List{"lean", "nethttp"}, "lean or nethttp"},
		{List{"netpoll", "blocking", "exclusive"}, "netpoll, blocking or exclusive"},
	} {
		if got := c.l.Words(); got != c.want {
			t.Errorf("%q: %q, want %q", c.l, got, c.want)
		}
	}
	if l := (List{"a", "b"}); !l.Has("b") || l.Has("c") {
		t.Errorf("Has is wrong")
	}
}
