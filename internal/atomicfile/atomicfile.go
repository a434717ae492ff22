// Package atomicfile writes result files whole or not at all: to a
// temporary file in the same directory, then rename.
//
// Only a regular file (or a name not yet taken) is replaced that way. A
// rename over a device, a FIFO or /dev/stdout would swap it for a
// regular file (-json /dev/null would destroy the host's /dev/null, and
// a FIFO's reader would get nothing), and a rename over a symlink would
// replace the link: those are written through instead, the symlink's
// target getting the atomic treatment if it is a regular file.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Write calls fill with a writer for path's temporary twin and renames it
// into place if fill and the flush succeed. On error nothing is left.
// When path is not a regular file, fill writes to it directly.
func Write(path string, fill func(w io.Writer) error) (err error) {
	target, through, err := resolve(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if through {
		return writeThrough(path, fill)
	}
	dir := filepath.Dir(target)
	f, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriter(f)
	if err = fill(bw); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), target); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeThrough opens what is at path (a device, a FIFO, a descriptor of
// this process) and writes to it; a short write (ENOSPC on /dev/full)
// and an error on close are errors.
func writeThrough(path string, fill func(w io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, errors.Unwrap(err))
	}
	bw := bufio.NewWriter(f)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// resolve follows path's symlinks to the name a rename must replace, and
// says whether the file must be written through instead: it exists and
// is not a regular file, or it is reached through /proc or /dev/fd
// (/dev/stdout is /proc/self/fd/1: renaming over the file it names would
// leave the shell's redirection pointing at the old inode).
func resolve(path string) (target string, through bool, err error) {
	if st, err := os.Stat(path); err == nil {
		if st.IsDir() {
			return "", false, errors.New("is a directory")
		}
		if !st.Mode().IsRegular() {
			return path, true, nil
		}
	}
	target = path
	for range 40 {
		if strings.HasPrefix(target, "/proc/") || strings.HasPrefix(target, "/dev/fd/") {
			return path, true, nil
		}
		lst, err := os.Lstat(target)
		if err != nil || lst.Mode()&os.ModeSymlink == 0 {
			// Not there yet (a dangling link's target is created) or
			// a regular file.
			return target, false, nil
		}
		next, err := os.Readlink(target)
		if err != nil {
			return "", false, err
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(target), next)
		}
		target = next
	}
	return "", false, unix.ELOOP
}

// WriteBytes writes b to path atomically.
func WriteBytes(path string, b []byte) error {
	return Write(path, func(w io.Writer) error { _, err := w.Write(b); return err })
}

// CheckWritable reports, before any work is done, whether Write could
// put a file at path: its directory takes a temporary file, and path is
// not a directory; what Write writes through must be writable by us.
func CheckWritable(path string) error {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	target, through, err := resolve(path)
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	if through {
		if err := unix.Access(path, unix.W_OK); err != nil {
			return fmt.Errorf("cannot write %s: %v", path, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".check-*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", path, errors.Unwrap(err))
	}
	f.Close()
	return os.Remove(f.Name())
}
