package kattr

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkProbeCost is what the programs cost every other process on
// the host, per system call: getppid(2), which only the accept program
// (on every system call's exit) sees, and a UDP send on loopback from an
// unwatched port (as every send of a client is) and from a watched one
// (as a server's responses are), which the send program sees. Compare
// the programs side by side:
//
//	go test -run - -bench ProbeCost -count 6 ./internal/kattr | benchstat -col /probe -
func BenchmarkProbeCost(b *testing.B) {
	udp := func(port int) (int, uint16) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			b.Fatal(err)
		}
		sa, _ := unix.Getsockname(fd)
		return fd, uint16(sa.(*unix.SockaddrInet4).Port)
	}
	// The sink's queue fills and the kernel drops what follows: the
	// sends still succeed, and cost the same.
	sink, sinkPort := udp(0)
	watched, port := udp(0)
	other, _ := udp(0)
	for _, fd := range []int{sink, watched, other} {
		defer unix.Close(fd)
	}
	to := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(sinkPort)}
	msg := []byte("x")
	ops := []struct {
		name string
		op   func()
	}{
		{"getppid", func() { unix.Getppid() }},
		{"send-unwatched", func() { unix.Sendto(other, msg, 0, to) }},
		{"send-watched", func() { unix.Sendto(watched, msg, 0, to) }},
	}
	type probe struct {
		name string
		// start attaches the program for sub-benchmark b and returns
		// what reads its ring.
		start func(b *testing.B) func()
	}
	probes := []probe{
		{"none", func(*testing.B) func() { return func() {} }},
		{"accept", func(b *testing.B) func() {
			tr := started(b, Start, []uint16{port})
			return func() { tr.Drain(0) }
		}},
		{"serve", func(b *testing.B) func() {
			tr := started(b, StartServing, []uint16{port})
			return func() { tr.ReadSends() }
		}},
	}
	// The raw programs, as a kernel without tp_btf runs them.
	for _, p := range probes[1:] {
		probes = append(probes, probe{p.name + "-raw", func(b *testing.B) func() {
			b.Setenv("LBBENCH_KATTR_RAW", "1")
			return p.start(b)
		}})
	}
	for _, op := range ops {
		for _, p := range probes {
			b.Run("op="+op.name+"/probe="+p.name, func(b *testing.B) {
				drain := p.start(b) // started closes the program when b ends
				for i := 0; b.Loop(); i++ {
					op.op()
					if i%50000 == 49999 {
						// The ring holds ~200k events: read it between
						// rounds, outside the timing.
						b.StopTimer()
						drain()
						b.StartTimer()
					}
				}
			})
		}
	}
}
