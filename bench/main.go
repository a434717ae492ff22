// Command bench is what `make bench` runs: the scenario matrix, the peer
// comparisons (target vs nginx, loadgen vs wrk), and the report.
//
//	go run ./bench matrix -results DIR [-count 10] [-duration 1s] ...
//	go run ./bench peers -results DIR
//	go run ./bench report DIR
//	go run ./bench compare OLD NEW
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"matrix":  cmdMatrix,
	"report":  cmdReport,
	"compare": cmdCompare,
	"check":   cmdCheck,
	"observe": cmdObserve,
	"peers":   cmdPeers,
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || commands[args[0]] == nil {
		fmt.Fprintf(stderr, "usage: bench matrix|peers|report|compare|check|observe [flags]\n")
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err := commands[args[0]](ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "bench %s: interrupted\n", args[0])
		return 130
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "bench %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "bench %s: %v\n", args[0], err)
		return 1
	}
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}
