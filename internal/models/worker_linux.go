package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
	"github.com/lbbench/lbbench/internal/sockets"
	"github.com/lbbench/lbbench/internal/steer"
)

// The supervisor starts a worker by re-executing its own binary with the
// worker's spec in this environment variable and these inherited fds.
const (
	workerEnv   = "LBBENCH_WORKER"
	fdCounters  = 3 // memfd with the shm slots
	fdControl   = 4 // SOCK_SEQPACKET to the supervisor
	fdListener  = 5 // shared model: the inherited listening socket
	fdProg      = 6 // bpf-rr, bpf-least: the SK_REUSEPORT program
	fdSocks     = 7 // ... its REUSEPORT_SOCKARRAY
	fdLoads     = 8 // ... its counter map (bpf-least: mmap-able loads)
	pollTimeout = 250 * time.Millisecond
)

// workerSpec is what a worker process is told.
type workerSpec struct {
	Config
	ID    int `json:"id"`
	Slot  int `json:"slot"`  // shm slot
	Slots int `json:"slots"` // shm slots in all
}

// IsWorker reports whether this process was started as a worker.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// RunWorker runs a worker process and returns its exit status. Start-up
// errors go to the supervisor over the control socket as one line.
func RunWorker() int {
	log.SetFlags(0)
	log.SetPrefix(fmt.Sprintf("target: worker (pid %d): ", os.Getpid()))
	ctl := os.NewFile(fdControl, "control")
	w, err := newWorker()
	if err != nil {
		fmt.Fprintf(ctl, "error %v", err)
		return 1
	}
	return w.run(ctl)
}

type worker struct {
	spec  workerSpec
	slot  *shm.Slot
	srv   *server
	lfd   int          // listening fd for blocking/exclusive accept; -1 otherwise
	ln    net.Listener // listener for netpoll accept
	inode uint64
	stop  atomic.Bool
}

func newWorker() (*worker, error) {
	w := &worker{lfd: -1}
	if err := json.Unmarshal([]byte(os.Getenv(workerEnv)), &w.spec); err != nil {
		return nil, fmt.Errorf("bad worker spec: %w", err)
	}
	region, err := shm.Map(os.NewFile(fdCounters, "counters"), w.spec.Slots)
	if err != nil {
		return nil, err
	}
	w.slot = region.Slot(w.spec.Slot)
	w.slot.Store(shm.PID, uint64(os.Getpid()))
	w.srv = newServer(w.slot, w.spec.ID, os.Getpid(), w.spec.Work, w.spec.Sleep)

	switch w.spec.Model {
	case Single:
		return w, nil // connections arrive on the control socket
	case Shared:
		return w, w.useListener(fdListener)
	case ReusePort:
		if w.spec.Restart == RestartHandoff {
			// The supervisor holds this worker's socket; a predecessor
			// may have left connections in its queue.
			if err := w.steer(fdListener); err != nil {
				return nil, err
			}
			return w, w.useListener(fdListener)
		}
		fd, err := sockets.Listen(w.spec.Addr, sockets.ListenOptions{
			ReusePort: true, Backlog: w.spec.Backlog, MPTCP: w.spec.MPTCP,
			Blocking: w.spec.Accept == AcceptBlocking,
		})
		if err != nil {
			return nil, err
		}
		if err := w.steer(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
		return w, w.useListener(fd)
	}
	return nil, fmt.Errorf("unknown model %q", w.spec.Model)
}

// useListener checks the listening socket a worker accepts on: its
// protocol (plain TCP unless -mptcp) and its O_NONBLOCK flag, which
// inheriting it through exec.Cmd.ExtraFiles clears for every holder.
func (w *worker) useListener(fd int) error {
	proto, err := sockets.Protocol(fd)
	if err != nil {
		return fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	want := unix.IPPROTO_TCP
	if w.spec.MPTCP {
		want = unix.IPPROTO_MPTCP
	}
	if proto != want {
		return fmt.Errorf("listening socket has protocol %d, want %d", proto, want)
	}
	blocking := w.spec.Accept == AcceptBlocking
	changed, err := sockets.EnsureBlocking(fd, blocking)
	if err != nil {
		return fmt.Errorf("O_NONBLOCK: %w", err)
	}
	if changed && w.spec.ID == 0 {
		// Expected once: the supervisor hands the shared socket over in
		// blocking mode, and the first worker sets what its strategy needs
		// on the shared file description.
		log.Printf("set O_NONBLOCK=%v on the listening socket for %s accept", !blocking, w.spec.Accept)
	}
	if w.inode, err = sockets.Inode(fd); err != nil {
		return err
	}
	if w.spec.Accept == AcceptNetpoll {
		f := os.NewFile(uintptr(fd), "listener")
		w.ln, err = net.FileListener(f) // dups fd; O_NONBLOCK stays set
		f.Close()
		return err
	}
	if blocking {
		// accept4 honours SO_RCVTIMEO: the thread wakes to notice a stop.
		tv := unix.NsecToTimeval(pollTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
	}
	w.lfd = fd
	return nil
}

func (w *worker) run(ctl *os.File) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	fmt.Fprintf(ctl, "ready %d", w.inode)

	// ended closes when the accept loop stops by itself (the supervisor
	// went away, or accept failed for good): the worker then exits and
	// the supervisor, if alive, starts another.
	ended := make(chan struct{})
	var loops sync.WaitGroup
	loops.Add(1)
	go func() {
		defer loops.Done()
		switch {
		case w.spec.Model == Single:
			w.receiveLoop(ctl)
		case w.ln != nil:
			w.netpollLoop()
		case w.spec.Accept == AcceptBlocking:
			w.blockingLoop()
		default:
			w.exclusiveLoop()
		}
		close(ended)
	}()
	if w.spec.Model != Single {
		go func() {
			io.Copy(io.Discard, ctl)
			if !w.stop.Load() {
				log.Printf("supervisor gone; stopping")
				sigs <- syscall.SIGTERM
			}
		}()
	}

	select {
	case <-sigs:
	case <-ended:
	}
	w.stop.Store(true)
	if w.ln != nil {
		w.ln.Close()
	}
	if w.spec.Model == Single {
		// The supervisor stops sending before it signals; unblock the read.
		unix.Shutdown(fdControl, unix.SHUT_RD)
	}
	loops.Wait()
	if w.lfd >= 0 {
		unix.Close(w.lfd) // blocking and exclusive accept: the listener goes now
	}
	if !w.srv.drain(w.spec.Grace) {
		log.Printf("grace %v over with connections still open; closing them", w.spec.Grace)
	}
	return 0
}

// steer applies the -steer mode to this worker's reuseport socket.
func (w *worker) steer(fd int) error {
	switch w.spec.Steer {
	case steer.CPU:
		return steer.AttachCPU(fd, w.spec.Workers)
	case steer.IncomingCPU:
		cpu, err := currentCPU()
		if err != nil {
			return err
		}
		return steer.SetIncomingCPU(fd, cpu)
	case steer.BPFRR, steer.BPFLeast:
		prog, err := ebpf.NewProgramFromFD(fdProg)
		if err != nil {
			return fmt.Errorf("steering program: %w", err)
		}
		socks, err := ebpf.NewMapFromFD(fdSocks)
		if err != nil {
			return fmt.Errorf("socket array: %w", err)
		}
		if err := steer.Join(socks, prog, w.spec.ID, fd); err != nil {
			return err
		}
		if w.spec.Steer == steer.BPFLeast {
			mem, err := unix.Mmap(fdLoads, 0, pageRound(8*w.spec.Workers), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				return fmt.Errorf("mmap loads map: %w", err)
			}
			w.srv.loads = (*uint64)(unsafe.Pointer(&mem[8*w.spec.ID]))
		}
	}
	return nil
}

func pageRound(n int) int {
	ps := os.Getpagesize()
	return (n + ps - 1) / ps * ps
}

// currentCPU is the CPU this thread runs on now (getcpu(2)).
func currentCPU() (int, error) {
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 {
		return -1, e
	}
	return int(cpu), nil
}

// locality compares the CPU a connection's packets arrive on with the CPU
// the worker runs on as it accepts.
func (w *worker) locality(c net.Conn) string {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ""
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ""
	}
	in := -1
	rc.Control(func(fd uintptr) { in, err = sockets.IncomingCPU(int(fd)) })
	mine, err2 := currentCPU()
	if err != nil || err2 != nil || in < 0 {
		return ""
	}
	if in == mine {
		w.slot.Add(shm.LocalConns, 1)
		return "1"
	}
	w.slot.Add(shm.RemoteConns, 1)
	return "0"
}

func (w *worker) accepted(c net.Conn) {
	w.slot.Add(shm.Accepted, 1)
	w.srv.start(c, w.locality(c))
}

func (w *worker) netpollLoop() {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			if w.stop.Load() {
				return
			}
			if isTemporary(err) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			log.Printf("accept: %v", err)
			return
		}
		w.accepted(c)
	}
}

// blockingLoop calls accept4 on a blocking socket from one locked OS
// thread: the kernel queues such sleepers FIFO, so connections go round
// the workers in turn.
func (w *worker) blockingLoop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for !w.stop.Load() {
		nfd, _, err := unix.Accept4(w.lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR || isTemporary(err) {
				continue
			}
			log.Printf("accept4: %v", err)
			return
		}
		w.acceptedFD(nfd)
	}
}

// exclusiveLoop waits on an epoll instance of its own with the listening
// socket added EPOLLEXCLUSIVE, as nginx does since 1.11.3, and accepts one
// connection per wake-up. Exclusive waiters are woken LIFO-like.
func (w *worker) exclusiveLoop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		log.Printf("epoll_create1: %v", err)
		return
	}
	defer unix.Close(ep)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(w.lfd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, w.lfd, &ev); err != nil {
		log.Printf("epoll_ctl EPOLLEXCLUSIVE: %v", err)
		return
	}
	events := make([]unix.EpollEvent, 1)
	for !w.stop.Load() {
		n, err := unix.EpollWait(ep, events, int(pollTimeout.Milliseconds()))
		if n <= 0 || err != nil {
			continue
		}
		nfd, _, err := unix.Accept4(w.lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			continue // another worker was woken for the same connection
		}
		w.acceptedFD(nfd)
	}
}

// receiveLoop takes connections the supervisor passes over the control
// socket (single model).
func (w *worker) receiveLoop(ctl *os.File) {
	uc, err := net.FileConn(ctl)
	if err != nil {
		log.Printf("control socket: %v", err)
		return
	}
	defer uc.Close()
	u := uc.(*net.UnixConn)
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*maxFDsPerMsg))
	for {
		_, oobn, _, _, err := u.ReadMsgUnix(buf, oob)
		if err != nil || oobn == 0 {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			log.Printf("control message: %v", err)
			continue
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				w.acceptedFD(fd)
			}
		}
	}
}

func (w *worker) acceptedFD(fd int) {
	f := os.NewFile(uintptr(fd), "conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		log.Printf("conn from fd: %v", err)
		return
	}
	w.accepted(c)
}

// isTemporary reports accept errors worth retrying: out of fds, a peer
// that reset before accept, no buffers.
func isTemporary(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ECONNABORTED, unix.ENOBUFS, unix.ENOMEM, unix.EPROTO, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// maxFDsPerMsg bounds the fds the supervisor packs into one message.
const maxFDsPerMsg = 1
