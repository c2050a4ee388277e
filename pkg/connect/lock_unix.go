//go:build !windows

package connect

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// tryLock takes an exclusive lock on f without waiting; the kernel drops it when the process
// dies, however it dies.
func tryLock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) }

// openState opens a state file without following a symlink: the directory is checked to be
// the user's own (checkStateDir), and nothing in it may point elsewhere.
func openState(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW, 0o600)
}

// checkStateDir makes dir (0700) if it does not exist, and refuses one that is a symlink,
// not this user's or open to others: in a shared /tmp another user could have made it first.
func checkStateDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir():
		return fmt.Errorf("state directory %s is not a directory of its own (a symlink?): remove it, or set KT_STATE_DIR", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("state directory %s belongs to uid %d, not to you (%d): another user may have made it; remove it, or set KT_STATE_DIR", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm() != 0o700:
		return fmt.Errorf("state directory %s has mode %o, want 0700: chmod 700 it, or remove it", dir, fi.Mode().Perm())
	}
	return nil
}
