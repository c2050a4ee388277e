//go:build linux || darwin

package router

import (
	"net"
	"syscall"
)

// connAlive tells, without waiting, whether an idle connection is still open: a peek that
// finds nothing to read means open; end of stream (the server closed it), an error, or bytes
// nobody asked for mean it must not carry another request.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true // not a socket: the retry on a new connection covers it
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}
