//go:build !windows

package run

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// child is the user's process. It runs in a process group of its own: on a terminal that
// group is made the terminal's foreground, as a shell does, so Ctrl-C, Ctrl-\ and Ctrl-Z reach
// the process and not kt; otherwise kt passes the signals it gets on to the group.
type child struct {
	cmd *exec.Cmd
	tty int // the terminal handed to the child, or -1
}

func startChild(cmd *exec.Cmd) (*child, error) {
	c := &child{cmd: cmd, tty: -1}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if f, ok := cmd.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if pg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP); err == nil && pg == unix.Getpgrp() {
			attr.Foreground, attr.Ctty, c.tty = true, int(f.Fd()), int(f.Fd())
		}
	}
	setParentDeathSignal(attr)
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// signal passes sig on to the child's process group.
func (c *child) signal(sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok && c.cmd.Process != nil {
		syscall.Kill(-c.cmd.Process.Pid, s)
	}
}

// wait waits for the child and returns its exit status: its code, or 128+N for signal N.
func (c *child) wait() (int, error) {
	err := c.cmd.Wait()
	if c.tty >= 0 {
		// Take the terminal back for kt's own last lines; a background group that does so is
		// sent SIGTTOU, which is ignored for the call.
		signal.Ignore(syscall.SIGTTOU)
		unix.IoctlSetPointerInt(c.tty, unix.TIOCSPGRP, unix.Getpgrp())
		signal.Reset(syscall.SIGTTOU)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}
