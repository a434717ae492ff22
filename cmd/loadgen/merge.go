package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/cli"
	"github.com/lbbench/lbbench/internal/rundoc"
)

// runMerge is `loadgen merge`: one result from the -json files of runs
// made together by several generators (rundoc.Merge says how).
func runMerge(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen merge", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadgen merge [flags] RUN.json RUN.json...\n")
		fs.PrintDefaults()
	}
	jsonPath := fs.String("json", "", "write the merged result as JSON to this file")
	benchPath := fs.String("bench", "", "write the merged result in the Go benchmark format (one sample) to this file")
	name := fs.String("name", "", "benchmark name for -bench (default: what the runs' names share, then generators=N)")
	quiet := fs.Bool("q", false, "no summary on stdout")
	err := cli.Parse(fs, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && fs.NArg() < 1 {
		err = errors.New("name the -json files of the runs to merge")
	}
	for _, out := range []struct{ flag, path string }{{"-json", *jsonPath}, {"-bench", *benchPath}} {
		if err == nil && out.path != "" {
			if werr := atomicfile.CheckWritable(out.path); werr != nil {
				err = fmt.Errorf("%s: %v", out.flag, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadgen merge: %v\n", err)
		return 2
	}
	var docs []*rundoc.Doc
	for _, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "loadgen merge: %v\n", err)
			return 1
		}
		var d rundoc.Doc
		if err := json.Unmarshal(b, &d); err != nil {
			fmt.Fprintf(stderr, "loadgen merge: %s: not a loadgen -json file: %v\n", path, err)
			return 1
		}
		docs = append(docs, &d)
	}
	if *name == "" {
		*name = rundoc.MergedName(docs)
	}
	doc, err := rundoc.Merge(*name, docs, fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "loadgen %v\n", err)
		// A duplicate is a mistake in the command line, not in the data.
		if errors.Is(err, rundoc.ErrDuplicate) {
			return 2
		}
		return 1
	}
	if !*quiet {
		rundoc.Summary(stdout, doc)
	}
	f := &flags{jsonPath: *jsonPath, benchPath: *benchPath, name: *name}
	if err := writeOutputs(f, doc, stdout); err != nil {
		fmt.Fprintf(stderr, "loadgen merge: %v\n", err)
		return 1
	}
	return 0
}
