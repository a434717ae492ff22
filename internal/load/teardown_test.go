package load

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// TestRunReleasesLoopsOnEarlyError: a run that fails after its loops are
// made (a network namespace that does not exist) releases every loop's
// sockets and epoll set through the one teardown path: no descriptor is
// left open.
func TestRunReleasesLoopsOnEarlyError(t *testing.T) {
	for _, url := range []string{"http://127.0.0.1:9/", "udp://127.0.0.1:9"} {
		before := openFDs(t)
		o := Options{URL: url, Mode: "keepalive", Conns: 4, Flows: 4, Duration: time.Second, NetNS: "/nonexistent/lbbench-netns"}
		_, err := Run(context.Background(), o, nil)
		if err == nil || !strings.Contains(err.Error(), "-netns") {
			t.Fatalf("%s: Run with a missing namespace: err %v, want a -netns error", url, err)
		}
		if after := openFDs(t); after != before {
			t.Errorf("%s: %d descriptors open before the run, %d after: the failed run leaked", url, before, after)
		}
	}
}
