package sockets

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListenPlainTCPWithBacklog(t *testing.T) {
	fd, err := Listen("127.0.0.1:0", ListenOptions{Backlog: 77})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if p, err := Protocol(fd); err != nil || p != unix.IPPROTO_TCP {
		t.Fatalf("SO_PROTOCOL %d %v, want plain TCP", p, err)
	}
	if nb, _ := IsNonblocking(fd); !nb {
		t.Fatal("not O_NONBLOCK")
	}
	sa, _ := unix.Getsockname(fd)
	port := sa.(*unix.SockaddrInet4).Port
	ls, err := Listeners(uint16(port))
	if err != nil || len(ls) != 1 || ls[0].Backlog != 77 {
		t.Fatalf("sock_diag: %+v %v, want one listener with backlog 77", ls, err)
	}
	// A second, non-reuseport socket on the same port is refused.
	_, err = Listen(ls[0].Addr.String(), ListenOptions{})
	if !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second listen: %v", err)
	}
}

func TestEnsureBlocking(t *testing.T) {
	fd, err := Listen("127.0.0.1:0", ListenOptions{Blocking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if changed, err := EnsureBlocking(fd, false); err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if nb, _ := IsNonblocking(fd); !nb {
		t.Fatal("still blocking")
	}
	if changed, _ := EnsureBlocking(fd, false); changed {
		t.Fatal("changed twice")
	}
}

// TestCheckMigration: with net.ipv4.tcp_migrate_req off a closing
// listener's queue is lost, with it on it moves.
func TestCheckMigration(t *testing.T) {
	const path = "/proc/sys/net/ipv4/tcp_migrate_req"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Skip("no tcp_migrate_req on this kernel")
	}
	defer os.WriteFile(path, old, 0o644)
	if err := os.WriteFile(path, []byte("0"), 0o644); err != nil {
		t.Skip("needs root")
	}
	lost, total, err := CheckMigration()
	if err != nil || lost == 0 {
		t.Fatalf("migration off: lost %d of %d (%v), want some lost", lost, total, err)
	}
	os.WriteFile(path, []byte("1"), 0o644)
	lost, total, err = CheckMigration()
	if err != nil || lost != 0 {
		t.Fatalf("migration on: lost %d of %d (%v), want none", lost, total, err)
	}
}
