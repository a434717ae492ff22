package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/lbbench/lbbench/internal/atomicfile"
	"github.com/lbbench/lbbench/internal/netpath"
)

// Where a cell's traffic goes (Cell.Net, the -net flag).
const (
	netLoopback = "loopback" // everything on the host's loopback
	netNetns    = "netns"    // the target and its clients in namespaces (netpath)
)

// Steering is a netns cell's receive steering beyond RSS; nil: the
// flags'.
type Steering struct{ RFS, XPS bool }

// net is the path a cell runs on.
func (c Cell) net(f *matrixFlags) string {
	if c.Net != "" {
		return c.Net
	}
	return f.Net
}

// topology builds the network path the first time a cell needs it; the
// matrix takes it down when it ends, however it ends.
func (f *matrixFlags) topology() (*netpath.Topology, error) {
	if f.top != nil {
		return f.top, nil
	}
	top, err := netpath.Up(netpath.Options{Clients: f.NetClients, RSS: f.RSS, RFS: f.RFS, XPS: f.XPS})
	if err != nil {
		return nil, fmt.Errorf("-net netns: %w", err)
	}
	f.top = top
	// env.txt records the path the samples ran on.
	env, _ := os.ReadFile(filepath.Join(f.dir, "env.txt"))
	if err := atomicfile.WriteBytes(filepath.Join(f.dir, "env.txt"), append(env, top.Describe()...)); err != nil {
		return nil, err
	}
	return top, nil
}

func (f *matrixFlags) closeTopology() error {
	if f.top == nil {
		return nil
	}
	err := f.top.Down()
	f.top = nil
	return err
}

// cellNet readies the path for a cell and returns its namespace ("" on
// loopback) and how to rewrite a loopback address onto it.
func (f *matrixFlags) cellNet(c Cell) (ns string, onPath func(string) string, err error) {
	if c.net(f) != netNetns {
		return "", func(a string) string { return a }, nil
	}
	top, err := f.topology()
	if err != nil {
		return "", nil, err
	}
	st := Steering{RFS: f.RFS, XPS: f.XPS}
	if c.Steering != nil {
		st = *c.Steering
	}
	if err := top.SetSteering(st.RFS, st.XPS); err != nil {
		return "", nil, err
	}
	// The ports found free on loopback are free in the fresh namespace.
	return top.Target, func(a string) string {
		if a == "off" {
			return a
		}
		_, port, _ := net.SplitHostPort(a)
		return net.JoinHostPort(top.Service.String(), port)
	}, nil
}

// netGenerators are a netns cell's generators: one per client
// namespace, with its own source addresses.
func (f *matrixFlags) netGenerators() []generator {
	var out []generator
	for _, c := range f.top.Clients {
		out = append(out, generator{src: c.Src, netns: c.NS})
	}
	return out
}
