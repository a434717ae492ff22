package variant

import (
	"flag"
	"io"
	"testing"
)

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

func TestVar(t *testing.T) {
	l := List{"lean", "nethttp"}
	v := "lean"
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l.Var(fs, &v, "http", "serving path")
	if err := fs.Parse([]string{"-http", "nethttp"}); err != nil || v != "nethttp" {
		t.Fatalf("-http nethttp: %v, value %q", err, v)
	}
	err := fs.Parse([]string{"-http", "fasthttp"})
	if err == nil || err.Error() != `invalid value "fasthttp" for flag -http: want lean or nethttp` || v != "nethttp" {
		t.Errorf("-http fasthttp: %v, value %q", err, v)
	}
	if d := fs.Lookup("http").DefValue; d != "lean" {
		t.Errorf("default shown as %q", d)
	}
}
