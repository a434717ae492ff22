package load

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSOptions configure https:// runs. The zero value is a full handshake
// on every new connection, verified against the system's roots.
type TLSOptions struct {
	// Enabled is set by Validate for an https:// URL.
	Enabled bool
	// Resume keeps each connection slot's session (tickets, as wrk does)
	// so its reconnects resume; without it every connection does a full
	// handshake (as ab does).
	Resume bool
	// Insecure skips certificate verification.
	Insecure bool
	// CACert is a PEM file of the roots to verify the server against.
	CACert string
	// Version pins the protocol: "" (1.2 or 1.3), "1.2" or "1.3".
	Version string
	// ObserveHandshake, if set, is called for every measured handshake
	// with its result ("full", "resumed") or failure reason (live
	// metrics); it must be safe for concurrent use.
	ObserveHandshake func(result string) `json:"-"`

	roots *x509.CertPool
}

// validateTLS checks the TLS options; scheme is the URL's.
func (o *Options) validateTLS(scheme string) error {
	t := &o.TLS
	t.Enabled = scheme == "https"
	if !t.Enabled {
		if t.Resume || t.Insecure || t.CACert != "" || t.Version != "" {
			return errors.New("-tls-resume, -insecure, -cacert and -tls-version go with an https:// URL")
		}
		return nil
	}
	if t.Version != "" && t.Version != "1.2" && t.Version != "1.3" {
		return fmt.Errorf("-tls-version %q: want 1.2 or 1.3", t.Version)
	}
	if t.CACert != "" && t.roots == nil {
		pem, err := os.ReadFile(t.CACert)
		if err != nil {
			return fmt.Errorf("-cacert: %w", err)
		}
		t.roots = x509.NewCertPool()
		if !t.roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-cacert %s: no PEM certificate in it", t.CACert)
		}
	}
	return nil
}

// tlsConfig is the client configuration of one connection slot; cache,
// if not nil, holds the slot's session (Resume).
func (o *Options) tlsConfig(cache tls.ClientSessionCache) *tls.Config {
	c := &tls.Config{
		// The URL's host is an IP: it is verified against the
		// certificate's IP SANs (and sent as no SNI).
		ServerName:         o.host,
		InsecureSkipVerify: o.TLS.Insecure,
		RootCAs:            o.TLS.roots,
		// HTTP/1.1 is what the engine speaks; a server that will not
		// speak it fails the handshake (an h2-only server).
		NextProtos:         []string{"http/1.1"},
		ClientSessionCache: cache,
	}
	if len(c.ServerName) > 2 && c.ServerName[0] == '[' {
		c.ServerName = c.ServerName[1 : len(c.ServerName)-1]
	}
	switch o.TLS.Version {
	case "1.2":
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		c.MinVersion, c.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	}
	if cache == nil {
		c.SessionTicketsDisabled = true
	}
	return c
}
