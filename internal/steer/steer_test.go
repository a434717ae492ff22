package steer

import (
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/sockets"
)

// group makes n reuseport listeners on one free loopback port.
func group(t *testing.T, n int) (string, []int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var fds []int
	for range n {
		fd, err := sockets.Listen(addr, sockets.ListenOptions{ReusePort: true, Backlog: 1024, Blocking: true})
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		t.Cleanup(func() { unix.Close(fd) })
	}
	return addr, fds
}

// queued counts the connections waiting in each listener's accept queue.
func queued(t *testing.T, addr string, fds []int) []int {
	t.Helper()
	ap, _ := sockets.ParseAddr(addr)
	ls, err := sockets.Listeners(ap.Port())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(fds))
	for i, fd := range fds {
		ino, _ := sockets.Inode(fd)
		for _, l := range ls {
			if l.Inode == ino {
				out[i] = int(l.Queue)
			}
		}
	}
	return out
}

func dialN(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("eBPF steering needs root (CI runs as root)")
	}
}

func TestRoundRobinExact(t *testing.T) {
	needRoot(t)
	const n, k = 3, 7
	objs, err := Load(BPFRR, n)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	addr, fds := group(t, n)
	for i, fd := range fds {
		if err := Join(objs.Socks, objs.Prog, i, fd); err != nil {
			t.Fatal(err)
		}
	}
	dialN(t, addr, n*k)
	time.Sleep(50 * time.Millisecond)
	for i, q := range queued(t, addr, fds) {
		if q != k {
			t.Errorf("listener %d has %d connections queued, want exactly %d (all: %v)", i, q, k, queued(t, addr, fds))
			break
		}
	}
}

func TestLeastAvoidsLoadedWorker(t *testing.T) {
	needRoot(t)
	const n = 3
	objs, err := Load(BPFLeast, n)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	mem, err := unix.Mmap(objs.Loads.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	loads := func(i int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[8*i])) }
	// Worker 0 already holds 10 connections.
	atomic.StoreUint64(loads(0), 10)
	addr, fds := group(t, n)
	for i, fd := range fds {
		if err := Join(objs.Socks, objs.Prog, i, fd); err != nil {
			t.Fatal(err)
		}
	}
	dialN(t, addr, 12)
	time.Sleep(50 * time.Millisecond)
	q := queued(t, addr, fds)
	// 12 new connections level workers 1 and 2 up to 10 first, then one
	// each to every worker: 1, 11, 0 is wrong; the even end state is
	// loads of 12, 12, 11 at most one apart.
	if q[0] > 1 || q[1] < 5 || q[2] < 5 {
		t.Errorf("queued %v: the worker holding 10 connections should get at most 1 of 12 new ones", q)
	}
	for i := range n {
		t.Logf("worker %d: load %d, queued %d", i, atomic.LoadUint64(loads(i)), q[i])
	}
	if got := atomic.LoadUint64(loads(0)) + atomic.LoadUint64(loads(1)) + atomic.LoadUint64(loads(2)); got != 22 {
		t.Errorf("loads sum %d, want 10 + 12", got)
	}
}

func TestCPUProgramAttaches(t *testing.T) {
	_, fds := group(t, 2)
	if err := AttachCPU(fds[0], 2); err != nil {
		t.Fatal(err)
	}
}

func TestHashIsNotRoundRobin(t *testing.T) {
	// The kernel's default, for contrast: spread by 4-tuple hash, so 21
	// connections on 3 listeners are rarely exactly 7 each.
	addr, fds := group(t, 3)
	dialN(t, addr, 21)
	time.Sleep(50 * time.Millisecond)
	q := queued(t, addr, fds)
	t.Logf("hash spread of 21 connections: %v", q)
	if q[0]+q[1]+q[2] != 21 {
		t.Fatalf("queued %v", q)
	}
}

var _ = strconv.Itoa
