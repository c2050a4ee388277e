//go:build !linux && !darwin && !windows

package tun

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
)

// DefaultMTU is the MTU of a TUN device.
const DefaultMTU = 1500

// Create is not implemented on this system yet.
func Create(name string, mtu int) (*Device, error) {
	return nil, fmt.Errorf("connect with a TUN device is not supported on %s yet; use --disable-tun for a SOCKS5 proxy", runtime.GOOS)
}

// AddRoutes is not implemented on this system yet.
func (d *Device) AddRoutes(prefixes []netip.Prefix) error { return AddRoutes(d.name, prefixes) }

// AddRoutes is not implemented on this system yet.
func AddRoutes(name string, prefixes []netip.Prefix) error { return fmt.Errorf("not supported") }

// File is not implemented on this system yet.
func (d *Device) File() *os.File { return nil }

// FromFile is not implemented on this system yet.
func FromFile(f *os.File) (*Device, error) {
	return nil, fmt.Errorf("not supported on %s", runtime.GOOS)
}

// AddAddress is not needed on this system.
func AddAddress(name string) error { return nil }

// Exists reports false.
func Exists(name string) bool { return false }

// Remove does nothing.
func Remove(name string) error { return nil }

// Overlaps reports nothing.
func Overlaps(p netip.Prefix, own string) ([]string, error) { return nil, nil }
