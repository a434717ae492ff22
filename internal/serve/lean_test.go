package serve

import (
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/httpwire"
	"github.com/lbbench/lbbench/internal/shm"
)

func TestResponses(t *testing.T) {
	region, f, err := shm.Create(1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Sleep: no event loop for this test.
	s, err := NewLean(Options{Slot: region.Slot(0), ID: 3, PID: 4242, Sleep: time.Millisecond,
		HeaderTimeout: DefaultHeaderTimeout, IdleTimeout: DefaultIdleTimeout})
	if err != nil {
		t.Fatal(err)
	}
	out := s.appendResponse(nil, &httpwire.Request{HTTP10: true}, false, "1")
	for _, want := range []string{"HTTP/1.1 200 OK\r\n", "X-Worker-Pid: 4242\r\n", "X-Worker-Id: 3\r\n", "X-Conn-Local: 1\r\n", "Connection: keep-alive\r\n", "\r\n\r\nok\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("response lacks %q:\n%s", want, out)
		}
	}
	if out := s.appendResponse(nil, &httpwire.Request{Head: true}, true, ""); !strings.HasSuffix(string(out), "Connection: close\r\n\r\n") {
		t.Errorf("HEAD with close:\n%q", out)
	}
	for err, status := range map[error]int{httpwire.ErrTooLarge: 431, httpwire.ErrUnsupported: 501, httpwire.ErrMalformed: 400} {
		if got := errorStatus(err); got != status {
			t.Errorf("%v -> %d, want %d", err, got, status)
		}
		if !strings.HasPrefix(string(appendError(nil, status)), "HTTP/1.1 "+statusText[status]) {
			t.Errorf("no status line for %d", status)
		}
	}
}
