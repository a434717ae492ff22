package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
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
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET", 46, Request{Close: true}, nil},
		{"GET / HTTP/1.1\r\nHost: x\r\nconnection: Keep-Alive, CLOSE\r\n\r\n", 58, Request{Close: true}, nil},
		{"GET / HTTP/1.0\r\n\r\n", 18, Request{HTTP10: true, Close: true}, nil},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 42, Request{HTTP10: true}, nil},
		{"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n", 29, Request{Head: true}, nil},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 47, Request{BodyLen: 5}, nil},
		// RFC 9112 3.2: HTTP/1.1 needs exactly one Host.
		{"GET / HTTP/1.1\r\n\r\n", 0, Request{}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 0, Request{}, ErrMalformed},
		// Partial heads that can never be valid are refused at once.
		{"GET / HTTP/1.1\nHost: x\n", 0, Request{}, ErrMalformed},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, Request{}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHo st: x", 0, Request{}, ErrMalformed},
		{"GET / HTTP/3", 0, Request{}, ErrMalformed},
		{"GE", 0, Request{}, nil},
		{"GET /a HTTP/1.", 0, Request{}, nil},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-A", 0, Request{}, nil},
		{"GET / HTTP/1.1\r\nHost: x\r\n", 0, Request{}, nil},
		{"GET / HTTP/2.0\r\n\r\n", 0, Request{}, ErrMalformed},
		{"GET  / HTTP/1.1\r\n\r\n", 0, Request{}, ErrMalformed},
		{"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 0, Request{}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0, Request{}, ErrUnsupported},
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
		// Refusing a partial head early must never refuse the start of
		// a head that is valid once complete.
		for k := range n - 1 {
			if n2, err := ParseRequest(in[:k], &again); n2 != 0 || err != nil {
				t.Fatalf("prefix %q of a valid head: %d %v", in[:k], n2, err)
			}
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

func TestParseResponseFramings(t *testing.T) {
	p := NewResponseParser("X-Worker-Pid")
	var r Response
	// An interim 100 Continue, then the final response.
	in := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	n, err := p.Parse([]byte(in), false, &r)
	if err != nil || !r.Interim() || r.BodyLen != 0 || n != 25 {
		t.Fatalf("100 Continue: %d %v %+v", n, err, r)
	}
	if _, err := p.Parse([]byte(in[n:]), false, &r); err != nil || r.Status != 200 || r.BodyLen != 2 {
		t.Fatalf("after 100: %v %+v", err, r)
	}
	// Chunked, as nginx sends a Lua handler's ngx.say and Go's net/http an unsized body.
	in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
	if _, err := p.Parse([]byte(in), false, &r); err != nil || !r.Chunked || r.BodyLen != -1 || r.Close {
		t.Fatalf("chunked: %v %+v", err, r)
	}
	// A coding other than chunked last: the body runs to the close.
	in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
	if _, err := p.Parse([]byte(in), false, &r); err != nil || r.Chunked || !r.Close {
		t.Fatalf("gzip: %v %+v", err, r)
	}
	// Not HTTP/1.x at all: refused as soon as that is certain.
	for _, bad := range []string{"hello world\n", "HTTP/2 200\r\n", "\x16\x03\x01"} {
		if _, err := p.Parse([]byte(bad), false, &r); err != ErrMalformed {
			t.Errorf("%q: %v, want ErrMalformed", bad, err)
		}
	}
	for _, partial := range []string{"", "H", "HTTP/", "HTTP/1.1 200"} {
		if n, err := p.Parse([]byte(partial), false, &r); n != 0 || err != nil {
			t.Errorf("%q: %d %v, want more bytes", partial, n, err)
		}
	}
}

func TestChunked(t *testing.T) {
	body := "5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n"
	next := "HTTP/1.1 200 OK\r\n"
	var c Chunked
	n, done, err := c.Feed([]byte(body + next))
	if err != nil || !done || n != len(body) {
		t.Fatalf("whole: n=%d done=%v err=%v, want %d", n, done, err, len(body))
	}
	// Byte by byte gives the same end.
	c = Chunked{}
	total := 0
	for i := range len(body) {
		k, d, err := c.Feed([]byte{body[i]})
		total += k
		if err != nil || d != (i == len(body)-1) {
			t.Fatalf("byte %d: done=%v err=%v", i, d, err)
		}
	}
	if total != len(body) {
		t.Fatalf("byte by byte consumed %d", total)
	}
	for _, bad := range []string{"x\r\n", "\r\n", "5\r\nhelloXX", "5\nhello", "0\r\nbad\nline\r\n\r\n", "1234567890abcdef0\r\n"} {
		c = Chunked{}
		if _, _, err := c.Feed([]byte(bad)); err != ErrMalformed {
			t.Errorf("%q: %v, want ErrMalformed", bad, err)
		}
	}
}

// FuzzChunked: whatever the input, Feed stays in bounds and agrees with
// itself fed byte by byte; a body it accepts, net/http's chunked reader
// reads without error.
func FuzzChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("a;x=y\r\n0123456789\r\n0\r\nT: 1\r\n\r\nrest"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var c Chunked
		n, done, err := c.Feed(in)
		if n < 0 || n > len(in) {
			t.Fatalf("n=%d of %d", n, len(in))
		}
		var b Chunked
		total, bdone := 0, false
		var berr error
		for i := 0; i < len(in) && !bdone && berr == nil; i++ {
			var k int
			k, bdone, berr = b.Feed(in[i : i+1])
			total += k
		}
		if (err == nil) != (berr == nil) || (err == nil && (done != bdone || (done && total != n))) {
			t.Fatalf("whole: %d %v %v; byte by byte: %d %v %v", n, done, err, total, bdone, berr)
		}
		if done && err == nil {
			if _, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in[:n]))); err != nil {
				t.Fatalf("we accept %q, net/http says %v", in[:n], err)
			}
		}
	})
}
