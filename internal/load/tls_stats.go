package load

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Handshake results and failure reasons, as the JSON, the summary and
// the metrics name them.
const (
	HandshakeFull    = "full"
	HandshakeResumed = "resumed"

	TLSTimeout     = "timeout"     // the handshake outlasted -timeout (a stalled server)
	TLSReset       = "reset"       // the server closed or reset the connection mid-handshake
	TLSNotTLS      = "not_tls"     // the server answered with something that is not TLS (a plain port)
	TLSCertificate = "certificate" // the certificate did not verify
	TLSALPN        = "alpn"        // the server would not speak http/1.1 (an h2-only server)
	TLSVersion     = "version"     // no protocol version in common
	TLSAlert       = "alert"       // the server ended the handshake with another alert
	TLSOther       = "other"
)

// TLSFailureReasons lists the failure reasons in report order.
var TLSFailureReasons = []string{TLSTimeout, TLSReset, TLSNotTLS, TLSCertificate, TLSALPN, TLSVersion, TLSAlert, TLSOther}

// TLSStats counts the measured handshakes of an https:// run.
type TLSStats struct {
	Full     int64            `json:"full"`
	Resumed  int64            `json:"resumed"`
	Failures map[string]int64 `json:"failures"` // by reason, every reason present
	// Handshake holds the successful handshakes' durations
	// (nanoseconds); the JSON has it under tls_handshake_seconds.
	Handshake *hdrhistogram.Histogram `json:"-"`
}

// NewTLSStats returns empty statistics.
func NewTLSStats() *TLSStats {
	t := &TLSStats{Failures: map[string]int64{}, Handshake: NewHistogram()}
	for _, r := range TLSFailureReasons {
		t.Failures[r] = 0
	}
	return t
}

// Add adds o's counts and histogram to t.
func (t *TLSStats) Add(o *TLSStats) {
	t.Full += o.Full
	t.Resumed += o.Resumed
	for k, n := range o.Failures {
		t.Failures[k] += n
	}
	if o.Handshake != nil {
		t.Handshake.Merge(o.Handshake)
	}
}

// TotalFailures sums the failures of every reason.
func (t *TLSStats) TotalFailures() int64 { return sumCounts(t.Failures) }

// tlsShard is a loop's TLS statistics behind its own lock.
type tlsShard struct {
	mu sync.Mutex
	TLSStats
}

func (s *tlsShard) ok(resumed bool, ns int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if resumed {
		s.Resumed++
	} else {
		s.Full++
	}
	s.Handshake.RecordValue(ns)
}

func (s *tlsShard) failed(reason string) {
	s.mu.Lock()
	s.Failures[reason]++
	s.mu.Unlock()
}

// handshakeReason names why a handshake failed.
func handshakeReason(err error) string {
	var (
		rec     tls.RecordHeaderError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		host    x509.HostnameError
		verify  *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || classify(err) == ErrTimeout:
		return TLSTimeout
	case errors.As(err, &rec):
		return TLSNotTLS
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &host):
		return TLSCertificate
	case errors.As(err, &alert):
		switch alert {
		case 120: // no_application_protocol
			return TLSALPN
		case 70: // protocol_version
			return TLSVersion
		}
		return TLSAlert
	case strings.Contains(err.Error(), "ALPN") || strings.Contains(err.Error(), "application protocol"):
		return TLSALPN
	case strings.Contains(err.Error(), "protocol version"):
		return TLSVersion
	case classify(err) == ErrReset, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return TLSReset
	}
	return TLSOther
}
