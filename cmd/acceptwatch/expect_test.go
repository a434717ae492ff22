package main

import (
	"bufio"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// strayPy joins the reuseport group on the port in argv[1], accepts and
// closes until stdin closes, then prints how many it accepted.
const strayPy = `import socket,sys,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)
s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(128); s.settimeout(0.05)
print("ready",flush=True)
n=0; done=[]
threading.Thread(target=lambda:(sys.stdin.read(),done.append(1)),daemon=True).start()
while not done:
    try:
        c,_=s.accept(); c.close(); n+=1
    except socket.timeout:
        pass
print(n,flush=True)`

// TestExpectMarksStray: a same-user listener that joins after the watch
// started is marked foreign, and the accepts it made are counted as
// foreign, exactly as many as it says it accepted.
func TestExpectMarksStray(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	_, port, _ := net.SplitHostPort(tg.Addr)
	cmd, stdout, out := startWatch(t, "-port", port, "-d", "3s", "-q")

	stray := exec.Command("/usr/bin/python3", "-c", strayPy, port)
	stdin, _ := stray.StdinPipe()
	pipe, _ := stray.StdoutPipe()
	if err := stray.Start(); err != nil {
		t.Skip("python3:", err)
	}
	t.Cleanup(func() { stray.Process.Kill(); stray.Wait() })
	rd := bufio.NewReader(pipe)
	if line, _ := rd.ReadString('\n'); line != "ready\n" {
		t.Fatalf("stray said %q", line)
	}
	time.Sleep(1200 * time.Millisecond) // the watch looks at the sockets once a second
	for range 300 {
		c, err := net.Dial("tcp", tg.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	stdin.Close()
	line, _ := rd.ReadString('\n')
	took, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || took == 0 {
		t.Fatalf("stray accepted %q", line)
	}
	s := readSummary(t, cmd, stdout, out)
	var foreign []Socket
	for _, k := range s.Sockets {
		if k.Foreign {
			foreign = append(foreign, k)
		}
	}
	if len(foreign) != 1 || len(foreign[0].Owners) != 1 || foreign[0].Owners[0] != stray.Process.Pid {
		t.Errorf("foreign sockets %+v, want one held by the stray %d (expected %v)", foreign, stray.Process.Pid, s.Expected)
	}
	if s.ForeignAccepts != int64(took) {
		t.Errorf("foreign accepts %d, the stray accepted %d", s.ForeignAccepts, took)
	}
	if !strings.Contains(stdout.String(), "foreign") {
		t.Errorf("summary does not mark the stray:\n%s", stdout.String())
	}
}

func TestExpectBadInput(t *testing.T) {
	proctest.WantOneLine(t, exec.Command(proctest.Bin(t, "acceptwatch"), "-port", "80", "-expect", "12,x"), 2, `"x" is not a pid`)
}

// TestExpectGiven: with -expect naming only one worker, the other
// worker's socket is foreign and its accepts are counted as such.
func TestExpectGiven(t *testing.T) {
	needRoot(t)
	tg := proctest.StartTarget(t, "-model", "reuseport", "-workers", "2")
	pids := []int{tg.Ready.Workers[0].PID, tg.Ready.Workers[1].PID}
	_, port, _ := net.SplitHostPort(tg.Addr)
	cmd, stdout, out := startWatch(t, "-port", port, "-d", "2s", "-q", "-expect", strconv.Itoa(pids[0]))
	for range 200 {
		if _, _, err := proctest.Get(tg.Addr); err != nil {
			t.Fatal(err)
		}
	}
	s := readSummary(t, cmd, stdout, out)
	other := s.PerPID[strconv.Itoa(pids[1])]
	if other == nil || s.ForeignAccepts != other.Accepts {
		t.Errorf("foreign accepts %d, worker %d (not expected) accepted %+v", s.ForeignAccepts, pids[1], other)
	}
}
