// Package serve is the target's serving path: HTTP/1.1 on the
// connections a worker already has. How a worker gets a connection (the
// accept models, internal/models) is not its business; what it does with
// one is: a worker hands each accepted socket to Path.ServeFD, the one
// point where a connection passes from the accept side to the serving
// side.
//
// Two paths: Lean (raw system calls and an event loop per worker, as
// nginx serves) and NetHTTP (Go's net/http, as most Go services run).
// Counters live in the worker's shared-memory slot, so the supervisor
// reads them without asking.
package serve

import (
	"crypto/tls"
	"time"

	"github.com/lbbench/lbbench/internal/shm"
)

// Options configures a serving path. Slot is required; a zero duration
// means no per-request work or sleep.
type Options struct {
	Slot *shm.Slot // the worker's counters
	ID   int       // the worker's id, sent as X-Worker-Id
	PID  int       // the worker's pid, sent as X-Worker-Pid
	// Work is CPU busy time per request, Sleep idle time per request.
	Work, Sleep time.Duration
	// HeaderTimeout bounds the wait for a complete request head (nginx's
	// client_header_timeout), IdleTimeout the wait for the next request
	// on a keep-alive connection (nginx's keepalive_timeout).
	HeaderTimeout, IdleTimeout time.Duration
	// Locality checks, for every accepted connection, whether its packets
	// arrive on the CPU the worker runs on (lean only: two system calls).
	Locality bool
	// TLS, if set, terminates TLS on every connection (tls_linux.go);
	// HeaderTimeout then covers the handshake.
	TLS *tls.Config
}

// Path serves the connections a worker's accept side yields.
type Path interface {
	// ServeFD serves one accepted, non-blocking socket descriptor and
	// owns it from then on: it is where a worker hands a connection to
	// the serving path.
	ServeFD(fd int)
	// Drain stops keep-alive and lets requests under way finish within
	// grace, then closes what is left; false when it had to.
	Drain(grace time.Duration) bool
	// SetLoads gives bpf-least's per-worker counter, which the path
	// decrements as connections close.
	SetLoads(*uint64)
}

// Default timeouts, as nginx's client_header_timeout and keepalive_timeout.
const (
	DefaultHeaderTimeout = 60 * time.Second
	DefaultIdleTimeout   = 75 * time.Second
)

// body is every 200 response's body, on both paths.
const body = "ok\n"

var (
	_ Path = (*Lean)(nil)
	_ Path = (*NetHTTP)(nil)
)
