package tun

import (
	"encoding/binary"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// virtio-net header values (linux/virtio_net.h) for a packet written to a TUN device that
// has IFF_VNET_HDR, as wireguard-go sets it up when the kernel offers TCP offloads.
const (
	vnetHdrLen        = 10
	vnetFlagNeedsCsum = 1
	vnetGSOTCPv4      = 1
	vnetGSOTCPv6      = 4
	vnetGSOECN        = 0x80
	maxOffloadIOVecs  = 16
	offloadMaxPacket  = 65535
)

// Offload reports whether WriteOffload works: wireguard-go batches (and so has virtio-net
// headers on the device) only when the kernel granted TCP segmentation offload.
func (d *Device) Offload() bool { return d.raw != nil && d.Device.BatchSize() > 1 }

// OffloadMaxSize is the largest packet WriteOffload takes and ReadOffload returns: an IPv4
// packet's length field.
func (d *Device) OffloadMaxSize() int { return offloadMaxPacket }

// WriteOffload writes one IP packet given as slices, with no copy: the kernel cuts a TCP
// payload longer than mss into segments (mss 0: one packet) and completes a checksum whose
// pseudo-header sum is in place at csumStart+csumOffset (csumOffset 0: the checksum is done).
func (d *Device) WriteOffload(pkt [][]byte, ipv6 bool, hdrLen, mss, csumStart, csumOffset uint16) error {
	var h [vnetHdrLen]byte
	if csumOffset != 0 {
		h[0] = vnetFlagNeedsCsum
		binary.LittleEndian.PutUint16(h[6:], csumStart)
		binary.LittleEndian.PutUint16(h[8:], csumOffset)
	}
	if mss != 0 {
		h[1] = vnetGSOTCPv4
		if ipv6 {
			h[1] = vnetGSOTCPv6
		}
		binary.LittleEndian.PutUint16(h[2:], hdrLen)
		binary.LittleEndian.PutUint16(h[4:], mss)
	}
	var small [maxOffloadIOVecs][]byte
	iov := append(small[:0], h[:])
	iov = append(iov, pkt...) // on the heap only for a packet in many pieces
	if d.raw == nil {
		return errors.New("no TUN file")
	}
	var werr error
	err := d.raw.Write(func(fd uintptr) bool {
		_, werr = unix.Writev(int(fd), iov)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

// ReadOffload reads one packet into buf, which holds OffloadMaxSize bytes and a little more,
// and returns the part of buf that holds it. A TCP packet comes whole, as the kernel's
// segmentation offload made it (up to 64 KiB, a multiple of the peer's MSS, its checksum
// possibly partial), not cut to the MTU.
func (d *Device) ReadOffload(buf []byte) ([]byte, error) {
	if d.raw == nil {
		return nil, errors.New("no TUN file")
	}
	for {
		var n int
		var rerr error
		err := d.raw.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return nil, os.ErrClosed // the file is closing
		}
		if rerr == unix.EINTR {
			continue
		}
		if rerr != nil {
			return nil, rerr
		}
		if n <= vnetHdrLen {
			continue
		}
		switch buf[1] &^ vnetGSOECN {
		case 0, vnetGSOTCPv4, vnetGSOTCPv6:
			return buf[vnetHdrLen:n], nil
		}
		// Nothing else is offered to the kernel (see takeOffloads); drop what cannot be read.
	}
}

// takeOffloads limits the kernel's offloads to TCP's: wireguard-go also asks for UDP
// segmentation where the kernel has it, and a UDP packet that carries several datagrams
// must not reach a stack that reads one.
func (d *Device) takeOffloads() error {
	var err error
	cerr := d.raw.Control(func(fd uintptr) {
		err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
	})
	if cerr != nil {
		return cerr
	}
	return err
}
