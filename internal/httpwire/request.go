// Package httpwire is the minimal HTTP/1.1 framing the target and the load
// generator need: request heads on the server side, response heads on the
// client side. It is hand-written because net/http's per-request cost
// (allocation, header maps, goroutine hand-offs) would hide the accept
// behaviour the suite measures; it parses only what framing needs
// (method, version, Connection, Content-Length, Transfer-Encoding,
// and on responses the status and one named header) and refuses the rest
// with a clear error.
package httpwire

import (
	"bytes"
	"errors"
)

// MaxHead is the largest request or response head accepted.
const MaxHead = 8 << 10

var (
	// ErrMalformed is a head that is not HTTP/1.x.
	ErrMalformed = errors.New("malformed HTTP head")
	// ErrTooLarge is a head over MaxHead.
	ErrTooLarge = errors.New("HTTP head too large")
	// ErrUnsupported is a framing this package does not implement
	// (Transfer-Encoding on requests).
	ErrUnsupported = errors.New("unsupported HTTP framing")
)

// Request is what the server needs to know about one request.
type Request struct {
	// Head is true for HEAD requests (no body in the response).
	Head bool
	// HTTP10 is true for HTTP/1.0.
	HTTP10 bool
	// Close is true when the connection must close after the response.
	Close bool
	// BodyLen is the Content-Length of the request body.
	BodyLen int64
}

var crlfcrlf = []byte("\r\n\r\n")

// ParseRequest parses the request head at the start of buf. It returns the
// head's length, or 0 and no error when buf does not hold a whole head yet.
// A partial head that can no longer become a valid one (a bare LF, a
// method that is not a token, a TLS ClientHello) is refused at once
// rather than waited for.
func ParseRequest(buf []byte, r *Request) (int, error) {
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		if len(buf) >= MaxHead {
			return 0, ErrTooLarge
		}
		return 0, checkPartial(buf)
	}
	if end+4 > MaxHead {
		return 0, ErrTooLarge
	}
	head := buf[:end+2] // keep the CRLF of the last line
	*r = Request{}
	if bytes.IndexByte(head, '\n') < bytes.Index(head, crlf)+1 {
		return 0, ErrMalformed // a bare LF before the first CRLF
	}
	line, rest, _ := bytes.Cut(head, crlf)
	if err := requestLine(line, r); err != nil {
		return 0, err
	}
	var f framing
	hosts := 0
	err := eachHeader(rest, func(name, value []byte) error {
		if equalFold(name, "host") {
			hosts++
		}
		_, err := f.header(name, value)
		return err
	})
	if err != nil {
		return 0, err
	}
	// RFC 9112 3.2: an HTTP/1.1 request has exactly one Host header.
	if hosts > 1 || (!r.HTTP10 && hosts == 0) {
		return 0, ErrMalformed
	}
	r.BodyLen = max(f.length, 0)
	r.Close = f.close || (r.HTTP10 && !f.keepAlive)
	return end + 4, nil
}

// requestLine parses "METHOD TARGET HTTP/1.x" into r.
func requestLine(line []byte, r *Request) error {
	method, line, ok := bytes.Cut(line, sp)
	if !ok || !isToken(method) {
		return ErrMalformed
	}
	target, version, ok := bytes.Cut(line, sp)
	if !ok || len(target) == 0 || bytes.IndexByte(target, ' ') >= 0 || hasCTL(target) {
		return ErrMalformed
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.HTTP10 = true
	default:
		return ErrMalformed
	}
	r.Head = string(method) == "HEAD"
	return nil
}

// checkPartial refuses a head that is not complete yet but can no longer
// become valid: every complete line must parse, every LF must follow a
// CR, and the unfinished line must still be a prefix of a valid one.
func checkPartial(buf []byte) error {
	buf = bytes.TrimSuffix(buf, []byte("\r")) // perhaps the start of a CRLF
	for i, c := range buf {
		if c == '\n' && (i == 0 || buf[i-1] != '\r') {
			return ErrMalformed
		}
	}
	line, rest, complete := bytes.Cut(buf, crlf)
	if complete {
		var r Request
		if err := requestLine(line, &r); err != nil {
			return err
		}
	} else if !requestLinePrefix(line) {
		return ErrMalformed
	}
	if !complete {
		return nil
	}
	// Whole header lines, then the start of the next one.
	if i := bytes.LastIndex(rest, crlf); i >= 0 {
		if err := eachHeader(rest[:i+2], func(name, value []byte) error { return nil }); err != nil {
			return err
		}
		rest = rest[i+2:]
	}
	name, _, _ := bytes.Cut(rest, []byte(":"))
	for _, c := range name {
		if c >= 0x80 || !tokenChar[c] {
			return ErrMalformed
		}
	}
	return nil
}

// requestLinePrefix reports whether p can still grow into a valid
// request line.
func requestLinePrefix(p []byte) bool {
	method, p, sp1 := bytes.Cut(p, sp)
	for _, c := range method {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	if !sp1 {
		return true
	}
	if len(method) == 0 {
		return false
	}
	target, version, sp2 := bytes.Cut(p, sp)
	if hasCTL(target) || (sp2 && len(target) == 0) {
		return false
	}
	if !sp2 {
		return true
	}
	return len(version) <= len("HTTP/1.1") && (bytes.HasPrefix([]byte("HTTP/1.1"), version) || bytes.HasPrefix([]byte("HTTP/1.0"), version))
}

// framing collects the headers that decide where a message ends and
// whether the connection stays open.
type framing struct {
	close, keepAlive bool
	length           int64 // -1 until a Content-Length is seen
	seenLength       bool
	// response: Transfer-Encoding is parsed (requests refuse it).
	response bool
	// te: a Transfer-Encoding was seen; chunked: its last coding is chunked.
	te, chunked bool
}

// header takes one header; handled is false for headers framing does not
// care about. A request with Transfer-Encoding is refused: the target
// does not take chunked request bodies.
func (f *framing) header(name, value []byte) (handled bool, err error) {
	switch {
	case equalFold(name, "connection"):
		eachToken(value, func(tok []byte) {
			if equalFold(tok, "close") {
				f.close = true
			} else if equalFold(tok, "keep-alive") {
				f.keepAlive = true
			}
		})
	case equalFold(name, "content-length"):
		n, ok := parseLength(value)
		if !ok || (f.seenLength && n != f.length) {
			return true, ErrMalformed
		}
		f.length, f.seenLength = n, true
	case equalFold(name, "transfer-encoding"):
		if !f.response {
			return true, ErrUnsupported
		}
		f.te = true
		eachToken(value, func(tok []byte) { f.chunked = equalFold(tok, "chunked") })
	default:
		return false, nil
	}
	return true, nil
}

var (
	crlf = []byte("\r\n")
	sp   = []byte(" ")
)

// eachHeader calls fn for each "name: value" line of lines (each line ends
// in CRLF), with the value's surrounding blanks trimmed.
func eachHeader(lines []byte, fn func(name, value []byte) error) error {
	for len(lines) > 0 {
		var line []byte
		var ok bool
		line, lines, ok = bytes.Cut(lines, crlf)
		if !ok {
			return ErrMalformed
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(name) || hasCTL(value) {
			return ErrMalformed
		}
		if err := fn(name, bytes.Trim(value, " \t")); err != nil {
			return err
		}
	}
	return nil
}

// eachToken calls fn for each comma-separated token of v.
func eachToken(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		if tok = bytes.Trim(tok, " \t"); len(tok) > 0 {
			fn(tok)
		}
	}
}

// parseLength parses a Content-Length: at most 18 digits, so it fits an
// int64.
func parseLength(v []byte) (int64, bool) {
	if len(v) > 18 {
		return 0, false
	}
	n, ok := ParseUint(v)
	return int64(n), ok
}

// hasCTL reports whether b holds a control character other than HTAB. A
// bare LF inside a line is one: other parsers take it as a line break, and
// disagreeing on where a header ends is how requests get smuggled.
func hasCTL(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFold compares b with a lower-case ASCII string, ignoring case.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
