package main

import (
	"strconv"
)

// This file turns a cell into the command lines of the two programs a
// sample runs, bin/target and bin/loadgen: the one place where a cell's
// fields become flags, so nothing reads a flag back out of an argv.

// targetArgs are bin/target's flags for cell c: listening on addr, its
// metrics on metricsAddr, terminating TLS with tf unless tf is zero.
func targetArgs(c Cell, addr, metricsAddr string, tf tlsFiles) []string {
	args := append([]string{"-addr", addr, "-metrics-addr", metricsAddr, "-workers", strconv.Itoa(c.Workers)}, targetVariants[c.Model].flags()...)
	if c.Work > 0 {
		args = append(args, "-work", c.Work.String())
	}
	if tf.cert != "" {
		args = append(args, "-tls-cert", tf.cert, "-tls-key", tf.key)
	}
	if c.Backlog > 0 {
		args = append(args, "-backlog", strconv.Itoa(c.Backlog))
	}
	if c.RestartEvery > 0 {
		args = append(args, "-restart-every", c.RestartEvery.String())
	}
	return args
}

// sampleLoad is what one sample's generators share besides the cell.
type sampleLoad struct {
	addr        string  // the server's host:port
	metricsAddr string  // the target's metrics host:port, for -restarts
	cacert      string  // the sample's certificate, "" without TLS
	rate        float64 // the scenario's calibrated open-loop rate, over all generators
	startAt     string  // when the generators start together, "" for one generator
}

// loadgenArgs are bin/loadgen's flags for generator i of gens under cell
// c, writing its run to out. The connections (or flows) and the rate are
// split over the generators: each sends its share, so together they are
// the cell's load.
func loadgenArgs(f *matrixFlags, c Cell, s sampleLoad, gens []generator, i int, out string) []string {
	n, g := len(gens), gens[i]
	args := []string{"-q", "-d", c.Duration.String(), "-warmup", f.Warmup.String(),
		"-workers", strconv.Itoa(c.Workers), "-src", g.src, "-json", out, "-name", c.Name}
	if c.Flows > 0 {
		args = append(args, "-flows", strconv.Itoa(share(c.Flows, n, i)))
		if c.RebindEvery > 0 {
			args = append(args, "-rebind-every", c.RebindEvery.String())
		}
	} else {
		clients := f.Clients
		if c.Clients > 0 {
			clients = c.Clients
		}
		args = append(args, "-c", strconv.Itoa(share(clients, n, i)), "-conn", c.Conn)
		args = append(args, attributionArgs(c.Model, c.Kernel)...)
	}
	if rate := c.rate(s.rate); rate > 0 {
		args = append(args, "-rate", strconv.FormatFloat(rate/float64(n), 'f', 0, 64))
	}
	if c.Restarts {
		args = append(args, "-restarts", "http://"+s.metricsAddr+"/restarts")
	}
	if s.startAt != "" {
		args = append(args, "-start-at", s.startAt)
	}
	if g.netns != "" {
		args = append(args, "-netns", g.netns)
	}
	if c.Poisson {
		args = append(args, "-poisson")
	}
	if c.Timeout > 0 {
		args = append(args, "-timeout", c.Timeout.String())
	}
	if c.TLSResume {
		args = append(args, "-tls-resume")
	}
	if s.cacert != "" {
		args = append(args, "-cacert", s.cacert)
	}
	return append(args, cellURL(c, s.addr))
}

// rate is the cell's open-loop rate over all generators, 0 for a closed
// loop: its own fixed rate, else the scenario's calibrated one when it
// runs at a fraction of capacity.
func (c Cell) rate(calibrated float64) float64 {
	switch {
	case c.Rate > 0:
		return c.Rate
	case c.RateFraction > 0:
		return calibrated
	}
	return 0
}

// cellURL is what loadgen is pointed at.
func cellURL(c Cell, addr string) string {
	switch {
	case c.Flows > 0:
		return "udp://" + addr
	case c.TLS:
		return "https://" + addr + "/"
	}
	return "http://" + addr + "/"
}
