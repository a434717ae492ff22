// Package tlscert makes the throwaway certificates a run terminates TLS
// with: self-signed, for the addresses the run uses, valid for a day.
// A self-signed certificate is its own root, so a client verifies it
// with the certificate file as its CA (loadgen -cacert, curl --cacert)
// or skips verification (-insecure, wrk, ab).
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Options shape a certificate; the zero value is valid for a day from
// now, for 127.0.0.1, ::1 and localhost.
type Options struct {
	// Hosts are IP addresses or DNS names the certificate is for
	// (default 127.0.0.1, ::1, localhost).
	Hosts []string
	// NotBefore and NotAfter bound its validity (default now - 1 minute
	// to now + 24 h); a NotAfter in the past makes an expired one.
	NotBefore, NotAfter time.Time
}

// Write writes a new key (ECDSA P-256, as the servers' defaults
// negotiate fastest) and its self-signed certificate as PEM files
// cert.pem and key.pem in dir, and returns their paths.
func Write(dir string, o Options) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	if !o.NotAfter.After(o.NotBefore) {
		return "", "", errors.New("tlscert: NotAfter must be after NotBefore")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "lbbench throwaway", Organization: []string{"lbbench"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
