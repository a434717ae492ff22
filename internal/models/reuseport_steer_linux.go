package models

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/steer"
)

// steering holds, in the supervisor, the eBPF objects of the bpf-rr and
// bpf-least steering modes. The cpu and incoming-cpu modes need nothing
// in the supervisor: each worker sets them on its own socket.
type steering struct {
	mode    string
	workers int
	objs    *steer.Objects
	loads   []byte // bpf-least: the mmap-ed loads map
}

// loadSteering checks what the -steer mode needs and loads its eBPF
// objects (nil for modes that have none).
func loadSteering(c *Config, cpus []int) (*steering, error) {
	mode := c.Steer
	if steer.Pinned(mode) && (len(cpus) != c.Workers || cpus[len(cpus)-1] != len(cpus)-1) {
		return nil, fmt.Errorf("-steer %s needs one worker per CPU, on CPUs 0 to N-1: use -workers %d (allowed CPUs %v)", mode, len(cpus), cpus)
	}
	if !steer.UsesEBPF(mode) {
		return nil, nil
	}
	objs, err := steer.Load(mode, c.Workers)
	if err != nil {
		return nil, fmt.Errorf("-steer %s: %w", mode, err)
	}
	st := &steering{mode: mode, workers: c.Workers, objs: objs}
	if objs.Loads != nil {
		st.loads, err = unix.Mmap(objs.Loads.FD(), 0, pageRound(8*c.Workers), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			objs.Close()
			return nil, fmt.Errorf("-steer %s: mmap loads map: %w", mode, err)
		}
	}
	return st, nil
}

// files are the program and maps for worker id. A new process of
// worker id starts with a load of zero.
func (st *steering) files(id int) []namedFile {
	if st.loads != nil {
		resetLoad(st.loads, id)
	}
	out := []namedFile{{fileProg, st.objs.Prog.FD()}, {fileSocks, st.objs.Socks.FD()}}
	if st.objs.Loads != nil {
		out = append(out, namedFile{fileLoads, st.objs.Loads.FD()})
	} else if st.objs.Counter != nil {
		out = append(out, namedFile{fileLoads, st.objs.Counter.FD()})
	}
	return out
}

func (st *steering) close() {
	if st.loads != nil {
		unix.Munmap(st.loads)
		st.loads = nil
	}
	st.objs.Close()
}

// joinSteering applies the -steer mode to a worker's reuseport socket.
func joinSteering(w *worker, fd int) error {
	switch w.spec.Steer {
	case steer.CPU:
		return steer.AttachCPU(fd, w.spec.Workers)
	case steer.IncomingCPU:
		cpu, err := sockets.CurrentCPU()
		if err != nil {
			return err
		}
		return steer.SetIncomingCPU(fd, cpu)
	case steer.BPFRR, steer.BPFLeast, steer.BPFFlow:
		progFD, err := w.files.fd(fileProg)
		if err != nil {
			return err
		}
		socksFD, err := w.files.fd(fileSocks)
		if err != nil {
			return err
		}
		prog, err := ebpf.NewProgramFromFD(progFD)
		if err != nil {
			return fmt.Errorf("steering program: %w", err)
		}
		socks, err := ebpf.NewMapFromFD(socksFD)
		if err != nil {
			return fmt.Errorf("socket array: %w", err)
		}
		if err := steer.Join(socks, prog, w.spec.ID, fd); err != nil {
			return err
		}
		if w.spec.Steer == steer.BPFLeast {
			loadsFD, err := w.files.fd(fileLoads)
			if err != nil {
				return err
			}
			mem, err := unix.Mmap(loadsFD, 0, pageRound(8*w.spec.Workers), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				return fmt.Errorf("mmap loads map: %w", err)
			}
			w.serve.SetLoads((*uint64)(unsafe.Pointer(&mem[8*w.spec.ID])))
		}
	}
	return nil
}
