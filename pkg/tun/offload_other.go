//go:build !linux

package tun

import "errors"

// Offload reports whether WriteOffload works: only on Linux.
func (d *Device) Offload() bool { return false }

// OffloadMaxSize is the largest packet WriteOffload takes.
func (d *Device) OffloadMaxSize() int { return 0 }

// WriteOffload is Linux's.
func (d *Device) WriteOffload(pkt [][]byte, ipv6 bool, hdrLen, mss, csumStart, csumOffset uint16) error {
	return errors.New("TUN offload is not supported here")
}

// ReadOffload is Linux's.
func (d *Device) ReadOffload(buf []byte) ([]byte, error) {
	return nil, errors.New("TUN offload is not supported here")
}
