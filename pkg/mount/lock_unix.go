//go:build !windows

package mount

import (
	"os"
	"syscall"
)

// lockFile takes f's exclusive lock without waiting; the kernel drops it when the process
// ends, even on SIGKILL.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// held says whether another process holds f's lock (taking it if not).
func held(f *os.File) bool { return lockFile(f) != nil }
