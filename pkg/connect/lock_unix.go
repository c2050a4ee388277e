//go:build !windows

package connect

import (
	"os"
	"syscall"
)

// tryLock takes an exclusive lock on f without waiting; the kernel drops it when the process
// dies, however it dies.
func tryLock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) }
