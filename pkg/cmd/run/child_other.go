//go:build !linux && !windows

package run

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
