package run

import (
	"errors"
	"os"
	"os/exec"
)

// child is the user's process; on Windows Ctrl-C reaches the whole console, kt's process
// included, so nothing is passed on.
type child struct{ cmd *exec.Cmd }

func startChild(cmd *exec.Cmd) (*child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd}, nil
}

func (c *child) signal(sig os.Signal) {
	if sig != os.Interrupt && c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
}

func (c *child) wait() (int, error) {
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}
