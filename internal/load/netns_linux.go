package load

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckNetNS says whether path is a network namespace that setns can
// enter: a file on nsfs whose namespace type is CLONE_NEWNET. A mount
// namespace (/proc/1/ns/mnt) or an ordinary file (/etc/passwd) would
// otherwise fail later with setns's bare EINVAL.
func CheckNetNS(path string) error {
	// /proc/PID/ns/* are magic links named "mnt:[4026531841]": the kind
	// shows even where opening the file is not allowed.
	if l, err := os.Readlink(path); err == nil {
		if kind, _, ok := strings.Cut(l, ":["); ok && strings.HasSuffix(l, "]") && kind != "net" {
			return fmt.Errorf("%s is not a network namespace (it is a %s namespace)", path, kind)
		}
	}
	// Where the link cannot be read (another process's, without
	// ptrace rights), /proc/PID/ns/<kind> still names its kind.
	if filepath.Base(filepath.Dir(path)) == "ns" && strings.HasPrefix(path, "/proc/") {
		if kind := filepath.Base(path); kind != "net" {
			return fmt.Errorf("%s is not a network namespace (it is a %s namespace)", path, kind)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("no such network namespace (%s)", path)
		}
		return fmt.Errorf("cannot open %s: %v", path, err)
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fmt.Errorf("cannot stat %s: %v", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s is not a network namespace (not a namespace file at all)", path)
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("cannot tell the namespace type of %s: %v", path, err)
	}
	if t != unix.CLONE_NEWNET {
		return fmt.Errorf("%s is not a network namespace (it is another kind of namespace)", path)
	}
	return nil
}
