package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"testing"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		in  string
		n   int
		req Request
		err error
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, Request{}, nil},
		{"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET", 37, Request{Close: true}, nil},
		{"GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n", 49, Request{Close: true}, nil},
		{"GET / HTTP/1.0\r\n\r\n", 18, Request{HTTP10: true, Close: true}, nil},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 42, Request{HTTP10: true}, nil},
		{"HEAD /x HTTP/1.1\r\n\r\n", 20, Request{Head: true}, nil},
		{"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 38, Request{BodyLen: 5}, nil},
		{"GET / HTTP/1.1\r\nHost: x\r\n", 0, Request{}, nil},
		{"GET / HTTP/2.0\r\n\r\n", 0, Request{}, ErrMalformed},
		{"GET  / HTTP/1.1\r\n\r\n", 0, Request{}, ErrMalformed},
		{"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, Request{}, ErrUnsupported},
	}
	for _, c := range cases {
		var r Request
		n, err := ParseRequest([]byte(c.in), &r)
		if !errors.Is(err, c.err) || n != c.n || (err == nil && r != c.req) {
			t.Errorf("ParseRequest(%q) = %d, %+v, %v; want %d, %+v, %v", c.in, n, r, err, c.n, c.req, c.err)
		}
	}
	var r Request
	if _, err := ParseRequest(bytes.Repeat([]byte("a"), MaxHead), &r); err != ErrTooLarge {
		t.Errorf("oversized head: %v", err)
	}
}

func TestParseResponse(t *testing.T) {
	p := NewResponseParser("X-Worker-Pid", "X-Worker-Id")
	var r Response
	in := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx-worker-pid: 4242\r\nX-Worker-Id:  1 \r\n\r\nok\n"
	n, err := p.Parse([]byte(in), false, &r)
	if err != nil || n != len(in)-3 || r.Status != 200 || r.BodyLen != 3 || r.Close ||
		string(r.Values[0]) != "4242" || string(r.Values[1]) != "1" {
		t.Fatalf("got %d %v %+v", n, err, r)
	}
	in = "HTTP/1.0 503 Service Unavailable\r\n\r\n"
	if _, err := p.Parse([]byte(in), false, &r); err != nil || r.Status != 503 || !r.Close || r.BodyLen != -1 || r.Values[0] != nil {
		t.Fatalf("http/1.0 without length: %v %+v", err, r)
	}
	if _, err := p.Parse([]byte("HTTP/1.1 204 No Content\r\n\r\n"), false, &r); err != nil || r.BodyLen != 0 || r.Close {
		t.Fatalf("204: %v %+v", err, r)
	}
	if _, err := p.Parse([]byte("HTTP/1.1 2x0 OK\r\n\r\n"), false, &r); err != ErrMalformed {
		t.Fatalf("bad status: %v", err)
	}
}

// FuzzParseRequest checks that the parser never panics, stays in bounds,
// and agrees with net/http on framing whenever both accept a head.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 12\r\n\r\n"))
	f.Add([]byte("HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Request
		n, err := ParseRequest(in, &r)
		if err != nil || n == 0 {
			return
		}
		if n > len(in) {
			t.Fatalf("consumed %d of %d bytes", n, len(in))
		}
		var again Request
		if n2, err := ParseRequest(in[:n], &again); n2 != n || err != nil || again != r {
			t.Fatalf("head alone parses differently: %d %v %+v vs %+v", n2, err, again, r)
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in[:n])))
		if err != nil {
			return // net/http is stricter about targets and values
		}
		if std.Close != r.Close || std.ContentLength != r.BodyLen {
			t.Fatalf("net/http says close=%v length=%d; we say %+v for %q", std.Close, std.ContentLength, r, in[:n])
		}
	})
}

// FuzzParseResponse checks bounds and that captured values lie in the head.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Worker-Pid: 7\r\n\r\nok\n"), false)
	f.Add([]byte("HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\n\r\n"), true)
	p := NewResponseParser("X-Worker-Pid")
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		var r Response
		n, err := p.Parse(in, head, &r)
		if err != nil || n == 0 {
			return
		}
		if n > len(in) || r.Status < 0 || r.Status > 999 {
			t.Fatalf("n=%d status=%d", n, r.Status)
		}
		if v := r.Values[0]; v != nil && !bytes.Contains(in[:n], v) {
			t.Fatalf("captured value %q not in head", v)
		}
		if r.BodyLen < 0 && !r.Close {
			t.Fatal("unbounded body on a connection kept alive")
		}
	})
}
