package sockets

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// AcceptFlags: every accepted socket is non-blocking and close-on-exec.
const AcceptFlags = unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC

// CurrentCPU is the CPU this thread runs on now (getcpu(2)), to compare
// with a socket's SO_INCOMING_CPU.
func CurrentCPU() (int, error) {
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 {
		return -1, e
	}
	return int(cpu), nil
}
