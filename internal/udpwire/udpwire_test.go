package udpwire

import "testing"

func TestRoundTrip(t *testing.T) {
	b := make([]byte, 64)
	req := PutRequest(b, Request{Flow: 7, ID: 1 << 40, Stamp: 99})
	got, ok := ParseRequest(req)
	if !ok || got != (Request{7, 1 << 40, 99}) {
		t.Fatalf("request %+v %v", got, ok)
	}
	rep, ok := ParseReply(AnswerInPlace(req, 4242, 3))
	if !ok || rep.Request != got || rep.PID != 4242 || rep.Worker != 3 {
		t.Fatalf("reply %+v %v", rep, ok)
	}
	for _, bad := range [][]byte{nil, []byte("LBQ1"), []byte("XXXXxxxxxxxxxxxxxxxxxxxxxxxxxxxx")} {
		if _, ok := ParseRequest(bad); ok {
			t.Errorf("%q parsed as a request", bad)
		}
		if _, ok := ParseReply(bad); ok {
			t.Errorf("%q parsed as a reply", bad)
		}
	}
}

// FuzzParse: no input crashes the parsers, and what parses round-trips.
func FuzzParse(f *testing.F) {
	f.Add([]byte("LBQ1aaaaaaaabbbbbbbbcccccccc"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParseRequest(b); ok {
			if r2, _ := ParseRequest(PutRequest(make([]byte, RequestSize), r)); r2 != r {
				t.Fatalf("%+v became %+v", r, r2)
			}
		}
		ParseReply(b)
	})
}
