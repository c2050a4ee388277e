package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// DefaultMTU lets the kernel hand the stack large segments (there is no wire to fragment
// for) while keeping the per-packet buffers, the client's main memory under load, small.
const DefaultMTU = 16384

// Create makes and brings up a TUN device. A name ending in "%d" picks the first free number.
func Create(name string, mtu int) (*Device, error) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("no /dev/net/tun: load the tun module (sudo modprobe tun), or use --disable-tun for a SOCKS5 proxy instead")
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || os.IsPermission(err) {
			return nil, fmt.Errorf("create TUN device: %w: connect needs root or CAP_NET_ADMIN; run it as root, or as a user with passwordless sudo, or use --disable-tun", err)
		}
		return nil, fmt.Errorf("create TUN device: %w", err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, err
	}
	link, err := netlink.LinkByName(real)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("bring up %s: %w", real, err)
	}
	return newDevice(dev, real), nil
}

func newDevice(dev wgtun.Device, name string) *Device {
	d := &Device{Device: dev, name: name}
	if raw, err := dev.File().SyscallConn(); err == nil {
		d.raw = raw
		if d.Offload() && d.takeOffloads() != nil {
			d.raw = nil // wireguard-go's own reads and writes, then
		}
	}
	return d
}

// File is the device's file, to hand to another process (see FromFile).
func (d *Device) File() *os.File { return d.Device.File() }

// FromFile makes a Device of a TUN file that another process created and brought up (a
// privileged helper): it needs no privileges, as it sets nothing on the interface.
func FromFile(f *os.File) (*Device, error) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	f.Close()
	dev, name, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device from the helper: %w", err)
	}
	return newDevice(dev, name), nil
}

// AddRoutes routes each prefix into the device.
func (d *Device) AddRoutes(prefixes []netip.Prefix) error { return AddRoutes(d.name, prefixes) }

// AddRoutes routes each prefix into the named device.
func AddRoutes(name string, prefixes []netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	for _, p := range prefixes {
		ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipn, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

// LinkAddress is the address a TUN device gets when something needs it to have one:
// systemd-resolved gives a link a DNS scope only if it has an address. It is from
// 198.18.0.0/15, the benchmarking range no network uses, and goes with the device.
var LinkAddress = netip.MustParsePrefix("198.18.0.1/32")

// AddAddress gives the named device LinkAddress.
func AddAddress(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: LinkAddress.Addr().AsSlice(), Mask: net.CIDRMask(LinkAddress.Bits(), 32)}, Scope: int(netlink.SCOPE_UNIVERSE)} // resolved ignores link-scope ones
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("address %s on %s: %w", LinkAddress, name, err)
	}
	return nil
}

// Exists reports whether an interface of that name exists.
func Exists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// Remove deletes a leftover interface.
func Remove(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(link)
}

// Overlaps lists local routes (not through kt's device) that overlap p: a VPN, a docker bridge.
func Overlaps(p netip.Prefix, own string) ([]string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil {
			continue // the default route overlaps everything; cluster routes are more specific
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		rp := netip.PrefixFrom(a.Unmap(), ones)
		if !rp.Overlaps(p) {
			continue
		}
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		if dev == own {
			continue
		}
		out = append(out, fmt.Sprintf("%s dev %s", rp, dev))
	}
	return out, nil
}
