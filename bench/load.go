package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lbbench/lbbench/internal/load"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// generator is one loadgen process of a sample.
type generator struct {
	src   string // -src
	netns string // -netns, "" on loopback
}

// generators are the loadgen processes a cell's load is split over: G
// on loopback, each with its own share of the source addresses.
func (f *matrixFlags) generators(c Cell) ([]generator, error) {
	if c.net(f) == netNetns {
		gens := f.netGenerators()
		if c.Restarts || c.Crash != nil {
			gens = gens[:1]
		}
		return gens, nil
	}
	g := f.Generators
	if c.Restarts || c.Crash != nil {
		g = 1 // their figures come from one loadgen's view of the target
	}
	addrs, err := load.ParseSrc(f.Src)
	if err != nil {
		return nil, err
	}
	if len(addrs) < g {
		return nil, fmt.Errorf("-src %s: %d addresses for %d generators", f.Src, len(addrs), g)
	}
	var out []generator
	for i := range g {
		part := addrs[i*len(addrs)/g : (i+1)*len(addrs)/g]
		out = append(out, generator{src: srcRange(part)})
	}
	return out, nil
}

func srcRange(addrs []netip.Addr) string {
	if len(addrs) == 1 {
		return addrs[0].String()
	}
	return addrs[0].String() + "-" + addrs[len(addrs)-1].String()
}

// startLead is how far ahead generators are told to start, so that all
// of them are up and waiting when the moment comes.
const startLead = 500 * time.Millisecond

// runLoad drives the cell's load from its generators, started together
// (-start-at) with the connections and rate split between them, and
// returns their result, merged exactly when there are several
// (rundoc.Merge), written to jsonPath.
func runLoad(ctx context.Context, f *matrixFlags, c Cell, s sampleLoad, jsonPath string) (*rundoc.Doc, error) {
	gens, err := f.generators(c)
	if err != nil {
		return nil, err
	}
	if len(gens) > 1 {
		s.startAt = time.Now().Add(startLead).UTC().Format(time.RFC3339Nano)
	}
	type outcome struct {
		doc *rundoc.Doc
		err error
	}
	results := make([]chan outcome, len(gens))
	var files []string
	for i := range gens {
		out := jsonPath
		if len(gens) > 1 {
			// Each generator's own run, beside the merged sample (not in
			// json/, which the report reads as samples).
			dir := filepath.Join(filepath.Dir(jsonPath), "generators")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			out = filepath.Join(dir, strings.TrimSuffix(filepath.Base(jsonPath), ".json")+fmt.Sprintf("_g%d.json", i+1))
		}
		files = append(files, out)
		args := loadgenArgs(f, c, s, gens, i, out)
		results[i] = make(chan outcome, 1)
		go func() {
			d, err := runLoadgen(ctx, f, args, out)
			results[i] <- outcome{d, err}
		}()
	}
	var docs []*rundoc.Doc
	var errs []error
	for _, r := range results {
		o := <-r
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		docs = append(docs, o.doc)
	}
	if err := errors.Join(errs...); err != nil {
		// A failed or interrupted sample is not in raw.txt: what its
		// generators wrote must not stay beside the samples that are.
		for _, f := range append(files, jsonPath) {
			os.Remove(f)
		}
		return nil, err
	}
	doc := docs[0]
	if len(docs) > 1 {
		if doc, err = rundoc.Merge(c.Name, docs, files); err != nil {
			return nil, err
		}
		b, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	if doc.Requests == 0 {
		return nil, fmt.Errorf("loadgen: %s", strings.Join(doc.Problems, "; "))
	}
	return doc, nil
}

// share is generator i's part of n split over g.
func share(n, g, i int) int {
	return n/g + btoi(i < n%g)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runLoadgen runs one loadgen and reads its JSON. Exit status 1 is a
// run that went wrong in a way its JSON describes (problems): the sample
// stands unless nothing was served.
func runLoadgen(ctx context.Context, f *matrixFlags, args []string, jsonPath string) (*rundoc.Doc, error) {
	lbin, largs := onCPUs(filepath.Join(f.bin, "loadgen"), args, f.plan, false)
	cmd := exec.CommandContext(ctx, lbin, largs...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var ee *exec.ExitError
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 1) {
		return nil, fmt.Errorf("loadgen: %v: %s", err, strings.TrimSpace(string(out)))
	}
	b, rerr := os.ReadFile(jsonPath)
	if rerr != nil {
		return nil, fmt.Errorf("loadgen: %v: %s", err, strings.TrimSpace(string(out)))
	}
	var doc rundoc.Doc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", jsonPath, err)
	}
	return &doc, nil
}
