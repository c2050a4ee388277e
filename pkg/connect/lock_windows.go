package connect

import (
	"os"

	"golang.org/x/sys/windows"
)

// tryLock takes an exclusive lock on f without waiting; Windows drops it when the process dies.
func tryLock(f *os.File) error {
	var ol windows.Overlapped
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

// openState opens a state file (the state directory is under the user's own profile).
func openState(path string, flag int) (*os.File, error) { return os.OpenFile(path, flag, 0o600) }

// checkStateDir makes dir if it does not exist.
func checkStateDir(dir string) error { return os.MkdirAll(dir, 0o700) }
