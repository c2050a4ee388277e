//go:build !linux

package netadmin

import (
	"fmt"
	"io"
	"runtime"
)

// StartHelper is not implemented on this system yet: run connect with administrator rights.
func StartHelper(opts HelperOptions) (Admin, error) {
	return nil, fmt.Errorf("connect needs administrator rights for its TUN device on %s: run it with sudo (or as Administrator), or use --disable-tun", runtime.GOOS)
}

// ServeHelper is not implemented on this system yet.
func ServeHelper(sock string, uid int, errOut io.Writer) error {
	return fmt.Errorf("%s is not supported on %s", HelperCommand, runtime.GOOS)
}
