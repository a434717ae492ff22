package load

import (
	"crypto/tls"
	"fmt"
	"net"

	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// ProbeTLS makes one handshake with o's settings before any load, so a
// problem every handshake would have (a certificate that does not
// verify, no version or application protocol in common) is one clear
// error instead of a run of failures. A target that refuses, stalls or
// is not TLS is not an error here: the run counts those as it goes.
// o must have been validated.
func ProbeTLS(o *Options) error {
	if !o.TLS.Enabled {
		return nil
	}
	var err error
	inNetNS(o.NetNS, func() { err = probe(o) })
	return err
}

// SpeaksTLS says whether the server of a plain http:// run completes a
// TLS handshake (certificate unchecked): asked after a run in which
// nothing succeeded, so the user is told to use https:// rather than
// that the target seems down.
func SpeaksTLS(o *Options) bool {
	ok := false
	inNetNS(o.NetNS, func() {
		timeout := min(o.Timeout, 2*time.Second)
		nc, err := net.DialTimeout("tcp", o.Addr(), timeout)
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(timeout))
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		ok = tc.Handshake() == nil
	})
	return ok
}

// inNetNS runs f on a thread in network namespace netns ("": here); if
// the namespace cannot be entered, f does not run (the run itself says
// why). The thread stays in the namespace and ends with its goroutine
// (never unlocked).
func inNetNS(netns string, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if netns != "" {
			runtime.LockOSThread()
			fd, err := unix.Open(NetNSPath(netns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				return
			}
		}
		f()
	}()
	<-done
}

func probe(o *Options) error {
	timeout := min(o.Timeout, 5*time.Second)
	nc, err := net.DialTimeout("tcp", o.Addr(), timeout)
	if err != nil {
		return nil
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(nc, o.tlsConfig(nil))
	err = tc.Handshake()
	if err == nil {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			return fmt.Errorf("%s: the server chose ALPN %q; loadgen speaks http/1.1", o.URL, p)
		}
		tc.Close()
		return nil
	}
	switch handshakeReason(err) {
	case TLSCertificate:
		return fmt.Errorf("%s: certificate problem: %v", o.URL, err)
	case TLSALPN:
		return fmt.Errorf("%s: the server will not speak http/1.1 (ALPN; an h2-only server?): %v", o.URL, err)
	case TLSVersion:
		v := o.TLS.Version
		if v == "" {
			v = "1.2 or 1.3"
		}
		return fmt.Errorf("%s: no TLS version in common (offered %s): %v", o.URL, v, err)
	}
	return nil
}
