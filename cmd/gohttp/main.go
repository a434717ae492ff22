// Command gohttp is a plain Go net/http server, one process of several
// independent ones sharing a port through SO_REUSEPORT, as a Go service
// run as N copies (systemd instances, containers on the host network)
// is: no supervisor, no shared state, the kernel's reuseport hash spreads
// the connections. It answers every request with 200 "ok" and an
// X-Worker-Pid header. lbbench starts N of them (bench, peers.StartGoHTTP).
//
//	gohttp -addr 127.0.0.1:8080 & gohttp -join -addr 127.0.0.1:8080 &
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/sockets"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

type options struct {
	addr  string
	work  time.Duration
	grace time.Duration
	join  bool
}

func run(args []string, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("gohttp", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address HOST:PORT, shared with the other processes (SO_REUSEPORT)")
	fs.DurationVar(&o.work, "work", 0, "CPU busy time per request")
	fs.BoolVar(&o.join, "join", false, "join the SO_REUSEPORT group already listening on -addr (the other copies of this service); without it a port that has a listener is refused")
	fs.DurationVar(&o.grace, "grace", 5*time.Second, "on SIGTERM/SIGINT, how long in-flight requests may take")
	err := cli.Parse(fs, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	switch {
	case err != nil:
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.work < 0 || o.work > time.Minute:
		err = fmt.Errorf("-work %v: want 0 to 1m", o.work)
	case o.grace < 0:
		err = errors.New("-grace must not be negative")
	}
	if _, aerr := sockets.ParseAddr(o.addr); err == nil && aerr != nil {
		err = fmt.Errorf("-addr: %v", aerr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "gohttp: %v\n", err)
		return 2
	}
	if err := serve(o); err != nil {
		fmt.Fprintf(stderr, "gohttp: %v\n", err)
		return 1
	}
	return 0
}

func serve(o options) error {
	// SO_REUSEPORT lets any socket of the same user into the group: a
	// copy started on a port some other server holds would silently take
	// a share of its connections (it took 34% of a target's). Only an
	// explicit -join may do that; the target's sock_diag preflight says
	// whether anything listens.
	if !o.join {
		ap, _ := sockets.ParseAddr(o.addr)
		ls, err := sockets.Conflicts(ap)
		if err != nil {
			return fmt.Errorf("listen %s: cannot list sockets: %v", o.addr, err)
		}
		if len(ls) > 0 {
			return fmt.Errorf("listen %s: address already in use (%d listening socket(s) on port %d; -join to share it)", o.addr, len(ls), ap.Port())
		}
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", o.addr)
	if err != nil {
		return err
	}
	pid := strconv.Itoa(os.Getpid())
	srv := &http.Server{
		ReadHeaderTimeout: time.Minute,
		IdleTimeout:       75 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if o.work > 0 {
				for end := time.Now().Add(o.work); time.Now().Before(end); {
				}
			}
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("X-Worker-Pid", pid)
			io.WriteString(w, "ok\n")
		}),
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-sigs:
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		return fmt.Errorf("grace %v ran out with connections still open (closed)", o.grace)
	}
	return nil
}
