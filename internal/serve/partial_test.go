package serve

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbbench/lbbench/internal/shm"
)

// TestPartialHeadAcrossReads splits a pipelined pair of requests (the
// first with a body) at every byte and sends the halves in two reads of
// the server's: the first half is read at accept or by the event loop,
// kept by the connection between steps (a connection holds no read
// buffer of its own, only its partial head), and must join the second
// half into the same two responses as when sent whole. The server's own
// response counter is the ground truth beside what the client reads.
func TestPartialHeadAcrossReads(t *testing.T) {
	const reqs = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
	region, f, err := shm.Create(1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	slot := region.Slot(0)
	s, err := NewLean(Options{Slot: slot, ID: 0, PID: 1, HeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Drain(time.Second)
	want := uint64(0)
	for _, atAccept := range []bool{true, false} {
		for k := 1; k < len(reqs); k++ {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			client, server := fds[0], fds[1]
			s.hits, s.tries = 1, 0 // read at accept (the first try of 16 always does)
			if atAccept {
				mustWrite(t, client, reqs[:k])
			}
			s.ServeFD(server)
			if !atAccept {
				mustWrite(t, client, reqs[:k])
			}
			// The server has taken the first half once its socket holds
			// none of it (the loop reads it, or the read at accept did).
			waitFor(t, func() bool {
				n, err := unix.IoctlGetInt(client, unix.SIOCOUTQ)
				return err == nil && n == 0
			})
			mustWrite(t, client, reqs[k:])
			got := readResponses(t, client, 2)
			unix.Close(client)
			want += 2
			if n := strings.Count(got, "HTTP/1.1 200 OK\r\n"); n != 2 || !strings.HasSuffix(got, "\r\n\r\n"+body) {
				t.Fatalf("split at %d (at accept %v): got %q", k, atAccept, got)
			}
			waitFor(t, func() bool { return slot.Load(shm.Status2xx) == want })
		}
	}
	waitFor(t, func() bool { return slot.Load(shm.Open) == 0 })
}

func mustWrite(t *testing.T, fd int, p string) {
	t.Helper()
	if n, err := unix.Write(fd, []byte(p)); err != nil || n != len(p) {
		t.Fatalf("write: %d, %v", n, err)
	}
}

// readResponses reads fd until it holds n responses with body, or fails
// after a second.
func readResponses(t *testing.T, fd, n int) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(time.Second)
	for bytes.Count(got, []byte("\r\n\r\n"+body)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("after 1s: %q", got)
		}
		k, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil || k == 0 {
			t.Fatalf("read: %v (so far %q)", err, got)
		}
		got = append(got, buf[:k]...)
	}
	return string(got)
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 1s")
		}
		time.Sleep(50 * time.Microsecond)
	}
}
