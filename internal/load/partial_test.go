package load

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestPartialResponseAcrossReads: a server that sends every response in
// two writes, split at each byte in turn, with a pause between them, so
// loadgen's loop reads the halves separately: the partial head the slot
// keeps between reads (a connection holds no read buffer of its own
// between receives) must join the rest into one whole response, counted
// for the pid its header names. The server's own count of requests
// answered is the ground truth.
func TestPartialResponseAcrossReads(t *testing.T) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Worker-Pid: 77\r\nContent-Length: 3\r\n\r\nok\n"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n := len(resp) - 1 // splits at 1 .. len-1
	answered := make(chan int, 1)
	go func() {
		count := 0
		defer func() { answered <- count }()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for count < n {
			for { // one request head
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			k := count + 1
			if _, err := c.Write([]byte(resp[:k])); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond) // the client reads the first half alone
			if _, err := c.Write([]byte(resp[k:])); err != nil {
				return
			}
			count++
		}
	}()
	o := Options{URL: "http://" + ln.Addr().String() + "/", Mode: ModeKeepAlive, Conns: 1, Requests: int64(n), Timeout: 5 * time.Second}
	res, err := Run(context.Background(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-answered; got != n {
		t.Fatalf("server answered %d requests, want %d", got, n)
	}
	if res.Requests != int64(n) || res.TotalErrors() != 0 || res.PerPID[77].Requests != int64(n) {
		t.Fatalf("loadgen: %d requests, %d errors, per pid %v; want %d from pid 77 (server sent %q split at every byte)",
			res.Requests, res.TotalErrors(), res.PerPID, n, strings.ReplaceAll(resp, "\r\n", "|"))
	}
}
