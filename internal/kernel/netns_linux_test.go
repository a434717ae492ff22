package kernel

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNetCountersFollowTheCallingThread: the host's counters are read
// in the calling thread's network namespace, not the main thread's,
// which a goroutine locked into another namespace may have kept.
func TestNetCountersFollowTheCallingThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	host, err := Proc.TcpExt()
	if err != nil {
		t.Fatal(err)
	}
	inNew := make(chan map[string]uint64, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in its namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Error(err)
			inNew <- nil
			return
		}
		ext, err := Proc.TcpExt()
		if err != nil {
			t.Error(err)
		}
		inNew <- ext
	}()
	fresh := <-inNew
	if fresh == nil {
		return
	}
	if fresh["TcpActiveOpens"] != 0 || fresh["UdpInDatagrams"] != 0 {
		t.Errorf("a new namespace's counters read as TcpActiveOpens %d, UdpInDatagrams %d: not the calling thread's",
			fresh["TcpActiveOpens"], fresh["UdpInDatagrams"])
	}
	if host["TcpActiveOpens"] == 0 {
		t.Errorf("the host's TcpActiveOpens reads 0")
	}
}
