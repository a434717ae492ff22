package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/lbbench/lbbench/internal/results"
)

// cmdCheck checks a results folder's records: every cell has at least 6
// samples, every model named has samples, latencies are in seconds.
func cmdCheck(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) < 1 {
		return usageErr("want a results folder [and the models expected]")
	}
	dir, models := args[0], args[1:]
	s, err := results.Read(dir)
	if err != nil {
		return err
	}
	if problems := results.Check(s, 6, models); len(problems) > 0 {
		return fmt.Errorf("%s: %s", dir, strings.Join(problems, "; "))
	}
	fmt.Fprintf(stdout, "%s: ok (every cell >= 6 samples; models %s; latencies in seconds)\n", dir, strings.Join(models, ", "))
	return nil
}
