package sockets

import (
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
)

// Owner is a process holding a descriptor of a socket.
type Owner struct {
	PID  int
	Comm string
}

// Owners maps socket inodes to the processes holding a descriptor of
// them, read from the /proc at root ("/proc" for this host). A process
// whose descriptors cannot be read (another user's, without privilege,
// or one that exited meanwhile) is left out: its sockets have no owner.
func Owners(root string) (map[uint64][]Owner, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, err
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil, err
	}
	out := map[uint64][]Owner{}
	for _, p := range procs {
		targets, err := p.FileDescriptorTargets()
		if err != nil {
			continue
		}
		var comm string
		seen := map[uint64]bool{}
		for _, t := range targets {
			ino, ok := socketInode(t)
			if !ok || seen[ino] {
				continue
			}
			seen[ino] = true
			if comm == "" {
				if comm, err = p.Comm(); err != nil {
					comm = "?"
				}
			}
			out[ino] = append(out[ino], Owner{PID: p.PID, Comm: comm})
		}
	}
	return out, nil
}

// socketInode reads the inode from a descriptor's link, "socket:[123]".
func socketInode(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return ino, err == nil
}
