package httpwire

import (
	"bytes"
	"strings"
)

// Response is what the client needs to know about one response head.
type Response struct {
	Status int
	// Close is true when the server will close after this response.
	Close bool
	// BodyLen is the Content-Length, or -1 when the body is chunked or
	// runs until the connection closes.
	BodyLen int64
	// Chunked says the body comes in chunks (walk it with Chunked).
	Chunked bool
	// Values holds the values of the headers the parser was asked to
	// capture, in order; nil where absent. They alias the parsed buffer.
	Values [][]byte
}

// ResponseParser parses response heads and captures chosen headers.
type ResponseParser struct {
	capture []string // lower-case names
}

// NewResponseParser returns a parser that captures the named headers.
func NewResponseParser(capture ...string) *ResponseParser {
	p := &ResponseParser{}
	for _, c := range capture {
		p.capture = append(p.capture, strings.ToLower(c))
	}
	return p
}

// Parse parses the response head at the start of buf. It returns the
// head's length, or 0 and no error when more bytes are needed; bytes that
// cannot begin a response ("HTTP/1.") are refused at once. head says
// whether the request was HEAD (so the response has no body). An interim
// response (1xx other than 101) has no body; the final one follows it.
func (p *ResponseParser) Parse(buf []byte, head bool, r *Response) (int, error) {
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		if len(buf) >= MaxHead {
			return 0, ErrTooLarge
		}
		if k := min(len(buf), len(httpPrefix)); !bytes.Equal(buf[:k], httpPrefix[:k]) {
			return 0, ErrMalformed // not HTTP/1.x: HTTP/0.9, TLS, garbage
		}
		return 0, nil
	}
	if end+4 > MaxHead {
		return 0, ErrTooLarge
	}
	if cap(r.Values) < len(p.capture) {
		r.Values = make([][]byte, len(p.capture))
	}
	r.Values = r.Values[:len(p.capture)]
	clear(r.Values)
	r.Status, r.Close, r.BodyLen, r.Chunked = 0, false, -1, false

	line, rest, _ := bytes.Cut(buf[:end+2], crlf)
	// "HTTP/1.1 200 OK": version, three-digit status, optional reason.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, ErrMalformed
	}
	http10 := line[7] == '0'
	if !http10 && line[7] != '1' {
		return 0, ErrMalformed
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, ErrMalformed
		}
		r.Status = r.Status*10 + int(c-'0')
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, ErrMalformed
	}

	f := framing{length: -1, response: true}
	err := eachHeader(rest, func(name, value []byte) error {
		handled, err := f.header(name, value)
		if handled {
			return err
		}
		for i, c := range p.capture {
			if r.Values[i] == nil && equalFold(name, c) {
				r.Values[i] = value
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	r.BodyLen = f.length
	r.Close = f.close || (http10 && !f.keepAlive)
	switch {
	case head || r.Status/100 == 1 || r.Status == 204 || r.Status == 304:
		r.BodyLen = 0
	case f.te && f.chunked && !http10:
		// RFC 9112 6.3: Transfer-Encoding overrides Content-Length.
		r.BodyLen, r.Chunked = -1, true
	case f.te:
		r.BodyLen = -1 // not chunked last: the body runs to the close
	}
	if r.BodyLen < 0 && !r.Chunked {
		r.Close = true
	}
	return end + 4, nil
}

// Interim reports whether r is an interim response (1xx other than 101
// Switching Protocols), after which the final response follows.
func (r *Response) Interim() bool { return r.Status >= 100 && r.Status < 200 && r.Status != 101 }

var httpPrefix = []byte("HTTP/1.")

// Chunked walks a chunked body (RFC 9112 7.1) as its bytes arrive: the
// chunk sizes, their data, and the trailer section. The zero value is
// ready for a new body.
type Chunked struct {
	state   int
	left    int64 // data bytes left in the current chunk
	digits  int   // hex digits of the current size
	lineLen int   // length of the current size or trailer line
	// ext: the size line is past its digits, in a chunk extension.
	ext bool
}

const (
	chunkSize = iota
	chunkSizeLF
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailer
	chunkTrailerLF
	chunkDone
)

// maxChunkLine bounds a size line (with extensions) or a trailer line.
const maxChunkLine = 4096

// Feed consumes body bytes from p. It returns how many belong to the
// body and whether the body ended with them; bytes after n belong to the
// next response.
func (c *Chunked) Feed(p []byte) (n int, done bool, err error) {
	for n < len(p) {
		if c.state == chunkData {
			k := int(min(c.left, int64(len(p)-n)))
			n += k
			if c.left -= int64(k); c.left == 0 {
				c.state = chunkDataCR
			}
			continue
		}
		b := p[n]
		n++
		switch c.state {
		case chunkSize:
			c.lineLen++
			switch {
			case b == '\r':
				if c.digits == 0 {
					return n, false, ErrMalformed
				}
				c.state = chunkSizeLF
			case c.ext:
				if hasCTL([]byte{b}) {
					return n, false, ErrMalformed
				}
			case b == ';' && c.digits > 0:
				// Extensions are skipped. Blanks before the ";" are
				// refused, as net/http refuses them.
				c.ext = true
			default:
				v := unhex(b)
				if v < 0 || c.digits >= 15 {
					return n, false, ErrMalformed
				}
				c.left = c.left<<4 | int64(v)
				c.digits++
			}
			if c.lineLen > maxChunkLine {
				return n, false, ErrMalformed
			}
		case chunkSizeLF:
			if b != '\n' {
				return n, false, ErrMalformed
			}
			c.digits, c.lineLen, c.ext = 0, 0, false
			if c.left == 0 {
				c.state = chunkTrailer
			} else {
				c.state = chunkData
			}
		case chunkDataCR:
			if b != '\r' {
				return n, false, ErrMalformed
			}
			c.state = chunkDataLF
		case chunkDataLF:
			if b != '\n' {
				return n, false, ErrMalformed
			}
			c.state = chunkSize
		case chunkTrailer:
			if b == '\r' {
				c.state = chunkTrailerLF
				continue
			}
			if c.lineLen++; c.lineLen > maxChunkLine || b == '\n' {
				return n, false, ErrMalformed
			}
		case chunkTrailerLF:
			if b != '\n' {
				return n, false, ErrMalformed
			}
			if c.lineLen == 0 {
				*c = Chunked{state: chunkDone}
				return n, true, nil
			}
			c.lineLen, c.state = 0, chunkTrailer
		case chunkDone:
			return n - 1, true, nil
		}
	}
	return n, c.state == chunkDone, nil
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// ParseUint parses a decimal header value such as a pid; ok is false for
// anything else.
func ParseUint(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
