package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTLSRun: the TLS driver, in process (for -race): every connection
// is one handshake, resumed after each slot's first with Resume, and the
// counts, per pid and in total, are those of the requests made.
func TestTLSRun(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Worker-Pid", "7")
		w.Write([]byte("ok\n"))
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	for _, c := range []struct {
		mode   string
		resume bool
		rate   float64
	}{{ModeClose, false, 0}, {ModeClose, true, 0}, {ModeKeepAlive, false, 0}, {ModeClose, true, 400}} {
		o := Options{URL: srv.URL + "/", Mode: c.mode, Conns: 4, Requests: 200, Rate: c.rate, Timeout: 5 * time.Second,
			TLS: TLSOptions{Insecure: true, Resume: c.resume}}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := ProbeTLS(&o); err != nil {
			t.Fatal(err)
		}
		r, err := Run(context.Background(), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		tl := r.TLS
		if r.Requests != 200 || r.TotalErrors() != 0 || tl == nil || r.PerPID[7] == nil || r.PerPID[7].Requests != 200 {
			t.Fatalf("%+v: %d requests, errors %v, per pid %v", c, r.Requests, r.Errors, r.PerPID)
		}
		if tl.Full+tl.Resumed != r.Connections || tl.Handshake.TotalCount() != r.Connections {
			t.Errorf("%+v: %d full + %d resumed handshakes, %d recorded, for %d connections", c, tl.Full, tl.Resumed, tl.Handshake.TotalCount(), r.Connections)
		}
		if c.resume && tl.Resumed < r.Connections-int64(o.Conns) {
			t.Errorf("%+v: only %d of %d handshakes resumed", c, tl.Resumed, r.Connections)
		}
		if !c.resume && tl.Resumed != 0 {
			t.Errorf("%+v: %d resumed without Resume", c, tl.Resumed)
		}
	}
}
