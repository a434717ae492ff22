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
	// BodyLen is the Content-Length, or -1 when the body runs until the
	// connection closes.
	BodyLen int64
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
// head's length, or 0 and no error when more bytes are needed. head says
// whether the request was HEAD (so the response has no body).
func (p *ResponseParser) Parse(buf []byte, head bool, r *Response) (int, error) {
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		if len(buf) >= MaxHead {
			return 0, ErrTooLarge
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
	r.Status, r.Close, r.BodyLen = 0, false, -1

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

	f := framing{length: -1}
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
	if head || r.Status/100 == 1 || r.Status == 204 || r.Status == 304 {
		r.BodyLen = 0
	}
	if r.BodyLen < 0 {
		r.Close = true
	}
	return end + 4, nil
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
