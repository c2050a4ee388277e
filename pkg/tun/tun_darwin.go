package tun

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// macOS: a utun device, brought up with ifconfig and routed with route(8). Not tested by this
// project's CI, which runs on Linux only.

// DefaultMTU is the utun device's MTU.
const DefaultMTU = 1500

// utunAddr is the device's own (point-to-point) address: utun comes up only with one. It is
// from 198.18.0.0/15, the benchmarking range no network uses.
const utunAddr = "198.18.0.1"

// Create makes a utun device (the kernel picks its number) and brings it up.
func Create(name string, mtu int) (*Device, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("create TUN device: connect needs root on macOS: run it with sudo, or use --disable-tun for a SOCKS5 proxy")
	}
	dev, err := wgtun.CreateTUN("utun", mtu)
	if err != nil {
		return nil, fmt.Errorf("create utun device: %w", err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, err
	}
	if err := run("ifconfig", real, "inet", utunAddr, utunAddr, "mtu", strconv.Itoa(mtu), "up"); err != nil {
		dev.Close()
		return nil, err
	}
	return &Device{Device: dev, name: real}, nil
}

// AddRoutes routes each prefix into the device.
func (d *Device) AddRoutes(prefixes []netip.Prefix) error { return AddRoutes(d.name, prefixes) }

// AddRoutes routes each prefix into the named device.
func AddRoutes(name string, prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		family := "-inet"
		if p.Addr().Is6() {
			family = "-inet6"
		}
		if err := run("route", "-q", "-n", "add", family, "-net", p.String(), "-interface", name); err != nil {
			return fmt.Errorf("route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

// File is the device's file.
func (d *Device) File() *os.File { return d.Device.File() }

// FromFile is not used on macOS: connect runs as root there.
func FromFile(f *os.File) (*Device, error) {
	return nil, fmt.Errorf("a TUN device from another process is not supported on macOS")
}

// AddAddress does nothing: the device got its address when it was made.
func AddAddress(name string) error { return nil }

// Exists reports whether an interface of that name exists.
func Exists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// Remove does nothing: a utun device goes away with the process that holds it.
func Remove(name string) error { return nil }

// Overlaps lists local IPv4 routes (from netstat) not through own that overlap p.
func Overlaps(p netip.Prefix, own string) ([]string, error) {
	out, err := exec.Command("netstat", "-rn", "-f", "inet").Output()
	if err != nil {
		return nil, err
	}
	return parseNetstat(out, p, own), nil
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
