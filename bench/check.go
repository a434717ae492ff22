package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
)

// cmdCheck checks a results folder with benchstat itself: every cell has
// at least 6 samples, every model is a column, latencies are in seconds.
func cmdCheck(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) < 1 {
		return usageErr("want a results folder [and the models expected as columns]")
	}
	dir := args[0]
	models := args[1:]
	var out bytes.Buffer
	if err := runBenchstatTo(&out, "-col", "/model", filepath.Join(dir, "raw.txt")); err != nil {
		return err
	}
	text := out.String()
	var problems []string
	if strings.Contains(text, "need >= 6 samples") {
		problems = append(problems, "a cell has fewer than 6 samples (benchstat: need >= 6 samples)"+shortCells(dir))
	}
	header := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "│") {
			header = l
			break
		}
	}
	for _, m := range models {
		if !regexp.MustCompile(`│\s+` + regexp.QuoteMeta(m) + `\s+│`).MatchString(header) {
			problems = append(problems, fmt.Sprintf("model %s is not a column (header %q)", m, strings.TrimSpace(header)))
		}
	}
	if !strings.Contains(text, "p99-sec") || !strings.Contains(text, "p50-sec") {
		problems = append(problems, "no latency table in seconds (p50-sec, p99-sec)")
	}
	if regexp.MustCompile(`(?m)│\s+\S*(ms|ns/op)\s+│`).MatchString(text) {
		problems = append(problems, "a latency unit other than seconds")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", dir, strings.Join(problems, "; "))
	}
	fmt.Fprintf(stdout, "%s: ok (every cell >= 6 samples; columns %s; latencies in seconds)\n", dir, strings.Join(models, ", "))
	return nil
}

// shortCells names the cells and units with fewer than 6 samples.
func shortCells(dir string) string {
	s, err := loadSamples(dir)
	if err != nil {
		return ""
	}
	var short []string
	for _, n := range s.names {
		for unit, v := range s.vals[n] {
			if len(v) < 6 {
				short = append(short, fmt.Sprintf("%s %s: %d", n, unit, len(v)))
			}
		}
	}
	if len(short) == 0 {
		return ""
	}
	return ": " + strings.Join(short, ", ")
}
