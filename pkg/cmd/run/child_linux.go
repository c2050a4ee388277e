package run

import "syscall"

// setParentDeathSignal has the kernel send the child SIGTERM if kt dies (SIGKILL included),
// so that it does not run on without the cluster kt gave it.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGTERM }
