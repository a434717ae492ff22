package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbbench/lbbench/internal/proctest"
)

// Output flags used to rename a temporary file over whatever was at the
// path: /dev/full became a regular file, a FIFO's reader got nothing, a
// symlink was replaced by a file. Only regular files are replaced now;
// everything else is written through.

func fixedPidServer(t *testing.T) string {
	return hostile(t, eachRequest(func(c net.Conn) bool {
		_, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Worker-Pid: 4242\r\n\r\nok"))
		return err == nil
	}))
}

// wantDevice fails the test unless path is still the character device
// it was (same device number).
func wantDevice(t *testing.T, path string, rdev uint64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeCharDevice == 0 || st.Sys().(*syscall.Stat_t).Rdev != rdev {
		t.Fatalf("%s is no longer the character device it was: %v %v", path, st.Mode(), err)
	}
}

func rdevOf(t *testing.T, path string) uint64 {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Skipf("%s is not a character device here", path)
	}
	return st.Sys().(*syscall.Stat_t).Rdev
}

func TestOutputToDevices(t *testing.T) {
	url := fixedPidServer(t)
	full, null := rdevOf(t, "/dev/full"), rdevOf(t, "/dev/null")
	for _, flag := range []string{"-json", "-bench", "-series"} {
		t.Run(flag, func(t *testing.T) {
			cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", flag, "/dev/full", url)
			proctest.WantOneLine(t, cmd, 1, "write /dev/full: no space left on device")
			wantDevice(t, "/dev/full", full)

			cmd = exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", flag, "/dev/null", url)
			if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
				t.Fatalf("%s /dev/null: exit %d: %s", flag, code, stderr)
			}
			wantDevice(t, "/dev/null", null)
		})
	}
}

// /dev/stdout is a symlink into /proc/self/fd: the JSON goes to the
// pipe (or the file the shell redirected to), nothing is renamed.
func TestOutputToStdout(t *testing.T) {
	url := fixedPidServer(t)
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", "-json", "/dev/stdout", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Requests int64 }
	if err := json.Unmarshal(out, &doc); err != nil || doc.Requests != 20 {
		t.Fatalf("stdout is not the run's JSON (%v): %.200s", err, out)
	}

	// Stdout redirected to a regular file: the file gets it, and it is
	// the same inode the shell opened.
	dir := t.TempDir()
	sh := exec.Command("sh", "-c", `exec "$0" -q -c 1 -n 20 -json /dev/stdout "$1" > "$2"`, proctest.Bin(t, "loadgen"), url, filepath.Join(dir, "out.json"))
	before, _ := os.Create(filepath.Join(dir, "out.json"))
	before.Close()
	st0, _ := os.Stat(filepath.Join(dir, "out.json"))
	if code, stderr := proctest.RunStatus(t, sh); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	st1, _ := os.Stat(filepath.Join(dir, "out.json"))
	b, _ := os.ReadFile(filepath.Join(dir, "out.json"))
	if !os.SameFile(st0, st1) || json.Unmarshal(b, &doc) != nil || doc.Requests != 20 {
		t.Fatalf("redirected stdout: same inode %v, content %.200s", os.SameFile(st0, st1), b)
	}
}

func TestOutputToFIFO(t *testing.T) {
	url := fixedPidServer(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		f, err := os.Open(fifo) // blocks until the writer opens it
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(f)
		f.Close()
		got <- b
	}()
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", "-json", fifo, url)
	if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var b []byte
	select {
	case b = <-got:
	case <-time.After(5 * time.Second):
		// The old writer renamed a file over the FIFO: the reader
		// waits forever. Unblock it by opening the FIFO ourselves.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("the FIFO's reader got nothing within 5s")
	}
	var doc struct{ Requests int64 }
	if err := json.Unmarshal(b, &doc); err != nil || doc.Requests != 20 {
		t.Fatalf("the FIFO's reader got %.200q (%v)", b, err)
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the FIFO was replaced: %v %v", st.Mode(), err)
	}
}

// A symlink stays a link; its target (a regular file, replaced
// atomically in its own directory) gets the content. A dangling link's
// target is created.
func TestOutputThroughSymlink(t *testing.T) {
	url := fixedPidServer(t)
	dir := t.TempDir()
	other := filepath.Join(dir, "elsewhere")
	os.Mkdir(other, 0o755)
	target := filepath.Join(other, "real.json")
	os.WriteFile(target, []byte("old"), 0o644)
	link := filepath.Join(dir, "link.json")
	os.Symlink("elsewhere/real.json", link)
	dangling := filepath.Join(dir, "dangling.json")
	os.Symlink(filepath.Join(other, "new.json"), dangling)
	for _, c := range []struct{ link, target string }{{link, target}, {dangling, filepath.Join(other, "new.json")}} {
		cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", "-json", c.link, url)
		if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if st, err := os.Lstat(c.link); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s is no longer a symlink: %v %v", c.link, st.Mode(), err)
		}
		b, _ := os.ReadFile(c.target)
		var doc struct{ Requests int64 }
		if err := json.Unmarshal(b, &doc); err != nil || doc.Requests != 20 {
			t.Fatalf("%s got %.200q", c.target, b)
		}
	}
	// No temporary files left next to the link or the target.
	for _, d := range []string{dir, other} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("left behind: %s", filepath.Join(d, e.Name()))
			}
		}
	}
}

func TestMergeOutputToDevices(t *testing.T) {
	url := fixedPidServer(t)
	in := filepath.Join(t.TempDir(), "a.json")
	cmd := exec.Command(proctest.Bin(t, "loadgen"), "-q", "-c", "1", "-n", "20", "-json", in, url)
	if code, stderr := proctest.RunStatus(t, cmd); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	full := rdevOf(t, "/dev/full")
	cmd = exec.Command(proctest.Bin(t, "loadgen"), "merge", "-q", "-json", "/dev/full", in)
	proctest.WantOneLine(t, cmd, 1, "write /dev/full: no space left on device")
	wantDevice(t, "/dev/full", full)
	var out bytes.Buffer
	cmd = exec.Command(proctest.Bin(t, "loadgen"), "merge", "-q", "-json", "/dev/stdout", in)
	cmd.Stdout = &out
	if code, stderr := proctest.RunStatus(t, cmd); code != 0 || !json.Valid(out.Bytes()) {
		t.Fatalf("merge -json /dev/stdout: exit %d %s: %.200q", code, stderr, out.Bytes())
	}
}
