// Package cli holds what every command of the suite (target, loadgen,
// acceptwatch, gohttp and bench) does with flags: parse without dumping
// usage on a mistake (one line says what is wrong), print usage on -h,
// and tell which flags were set.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Parse parses args into fs. On -h it prints usage to stderr and returns
// flag.ErrHelp; on a mistake it returns one error and prints nothing.
func Parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fs.Usage()
		return err
	}
	if err != nil {
		return fmt.Errorf("%v (see -h)", err)
	}
	return nil
}

// Set returns the names of the flags given on the command line.
func Set(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// Stop says whether a command ends after parsing its flags, and with
// which exit status: 0 after -h (usage was printed), 2 after a mistake,
// which it prints as one line "name: err".
func Stop(name string, err error, stderr io.Writer) (code int, stop bool) {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2, true
	}
	return 0, false
}
