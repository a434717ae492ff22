package models

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
)

// TLS termination (-tls-cert, -tls-key). The supervisor checks the pair
// before it listens and never handshakes itself (in the single model it
// only passes descriptors); every worker loads the files from the paths
// in its spec and terminates TLS on its own connections
// (internal/serve).
//
// Session tickets are on, as crypto/tls has them by default, but a
// ticket is only worth something if whichever worker the client's next
// connection reaches can open it: the kernel (reuseport, shared) or the
// dispatcher (single) picks that worker, not the client. So the workers
// share one ticket key, as nginx's workers share the one their master
// made: each derives it from the private key and a seed the supervisor
// draws at start (HKDF-SHA256). The seed travels in the spec; it opens
// nothing without the key file. Tickets then survive rolling restarts,
// and a new target run (a new seed) starts with none.

// tlsOn says whether the target terminates TLS.
func (c *Config) tlsOn() bool { return c.TLSCert != "" || c.TLSKey != "" }

// checkTLS checks that the certificate and key are given together and
// load as a matching pair.
func (c *Config) checkTLS() error {
	switch {
	case !c.tlsOn():
		return nil
	case c.TLSKey == "":
		return errors.New("-tls-cert needs -tls-key (the certificate's private key)")
	case c.TLSCert == "":
		return errors.New("-tls-key needs -tls-cert (the certificate it is the key of)")
	case c.Proto == ProtoUDP:
		return errors.New("-tls-cert: TLS runs over TCP; -proto udp has no connections to terminate it on")
	}
	_, _, err := c.loadPair()
	return err
}

// loadPair reads and parses the certificate and key files.
func (c *Config) loadPair() (tls.Certificate, []byte, error) {
	certPEM, err := os.ReadFile(c.TLSCert)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("-tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.TLSKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("-tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("-tls-cert %s, -tls-key %s: %w", c.TLSCert, c.TLSKey, err)
	}
	return cert, keyPEM, nil
}

// newTicketSeed draws the seed the workers derive their shared ticket
// key from.
func newTicketSeed() string { return rand.Text() }

// tlsConfig is a worker's server configuration: the pair from the files,
// HTTP/1.1 by ALPN (the only protocol the target speaks), and the ticket
// key every worker of this run derives alike. nil when TLS is off.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.tlsOn() {
		return nil, nil
	}
	cert, keyPEM, err := c.loadPair()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	if c.TLSTicketSeed != "" {
		k, err := hkdf.Key(sha256.New, keyPEM, []byte(c.TLSTicketSeed), "lbbench session ticket key", 32)
		if err != nil {
			return nil, err
		}
		cfg.SetSessionTicketKeys([][32]byte{[32]byte(k)})
	}
	return cfg, nil
}
