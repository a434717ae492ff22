package models

import (
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Files pass from the supervisor to a worker by name, as
// cloudflare/tableflip passes its inventory: the supervisor lists them in
// the order of exec.Cmd.ExtraFiles and names them in the worker's spec,
// so neither side counts on fixed descriptor numbers.
const (
	fileCounters = "counters" // memfd with the shm slots
	fileControl  = "control"  // SOCK_SEQPACKET to the supervisor
	fileListener = "listener" // the listening socket the worker accepts on
	fileProg     = "steer-prog"
	fileSocks    = "steer-socks"
	fileLoads    = "steer-loads" // bpf-least: the mmap-able loads; bpf-rr: the counter
)

// namedFile is a descriptor the supervisor passes to a worker. The
// supervisor keeps its own descriptor; the worker gets a duplicate.
type namedFile struct {
	name string
	fd   int
}

// childFiles duplicates the descriptors of nf for exec.Cmd.ExtraFiles and
// returns their names in the same order. The duplicates are the caller's
// to close once the child has started: wrapping the supervisor's own
// descriptors in *os.File would let a finalizer close them.
func childFiles(nf []namedFile) (files []*os.File, names []string, err error) {
	for _, f := range nf {
		dup, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFiles(files)
			return nil, nil, fmt.Errorf("pass %s to a worker: %w", f.name, err)
		}
		files = append(files, os.NewFile(uintptr(dup), f.name))
		names = append(names, f.name)
	}
	return files, names, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// inherited is what a worker got: descriptor numbers by name. The worker
// owns them for its whole life; nothing wraps them in a finalizer.
type inherited map[string]int

// inheritedFrom maps the names of a worker's spec to the descriptors
// exec gave it (3, 4, ...).
func inheritedFrom(names []string) inherited {
	in := inherited{}
	for i, n := range names {
		in[n] = 3 + i
	}
	return in
}

// fd returns the descriptor passed as name.
func (in inherited) fd(name string) (int, error) {
	fd, ok := in[name]
	if !ok {
		return -1, fmt.Errorf("no %s file passed to this worker (got %v)", name, slices.Sorted(keys(in)))
	}
	return fd, nil
}

func keys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
