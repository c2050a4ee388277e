// Package tun creates the TUN device that connect routes cluster addresses into, one file per
// operating system, and adds its routes. Routes go away with the device.
package tun

import (
	"net/netip"
	"syscall"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is a TUN device with its routes.
type Device struct {
	wgtun.Device
	name string
	raw  syscall.RawConn // the device file, for writes that bypass wireguard-go (Linux)
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// Offset is the headroom each packet buffer needs in front of the packet.
const Offset = 16

// Route is one destination routed into the device.
type Route = netip.Prefix
