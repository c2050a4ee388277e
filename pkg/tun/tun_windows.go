package tun

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/tun/wintun"
)

// Windows: a Wintun adapter, addressed and routed with netsh. wintun.dll comes with the
// binary and is put beside it on first use. Not tested by this project's CI, which runs on
// Linux only.

// DefaultMTU is the adapter's MTU.
const DefaultMTU = 1500

// adapterAddr is the adapter's own address, from the benchmarking range no network uses.
const adapterAddr = "198.18.0.1"

// Create makes a Wintun adapter named name (without a "%d" pattern) and addresses it.
func Create(name string, mtu int) (*Device, error) {
	if err := ensureWintun(); err != nil {
		return nil, err
	}
	name = strings.ReplaceAll(name, "%d", "")
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create Wintun adapter %s: %w (run as Administrator, or use --disable-tun)", name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, err
	}
	if err := run("netsh", "interface", "ipv4", "set", "address", "name="+real, "static", adapterAddr, "255.255.255.255"); err != nil {
		dev.Close()
		return nil, err
	}
	return &Device{Device: dev, name: real}, nil
}

// ensureWintun puts the embedded wintun.dll beside the executable, where wireguard-go
// loads it from (the application directory, then System32), unless one is there already.
func ensureWintun() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return err
	}
	path, wrote, err := wintun.Install(filepath.Dir(exe), wintun.Embedded())
	if err != nil {
		return err
	}
	if wrote {
		klog.Background().V(1).Info("wrote Wintun beside the executable", "path", path, "version", wintun.Version)
	}
	return nil
}

// AddRoutes routes each prefix into the device.
func (d *Device) AddRoutes(prefixes []netip.Prefix) error { return AddRoutes(d.name, prefixes) }

// AddRoutes routes each prefix into the named adapter (active store: gone after a reboot).
func AddRoutes(name string, prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		family := "ipv4"
		if p.Addr().Is6() {
			family = "ipv6"
		}
		if err := run("netsh", "interface", family, "add", "route", "prefix="+p.String(), "interface="+name, "store=active"); err != nil {
			return fmt.Errorf("route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

// File is not available for a Wintun adapter.
func (d *Device) File() *os.File { return nil }

// FromFile is not supported on Windows.
func FromFile(f *os.File) (*Device, error) {
	return nil, fmt.Errorf("a TUN device from another process is not supported on Windows")
}

// AddAddress does nothing: the adapter got its address when it was made.
func AddAddress(name string) error { return nil }

// Exists reports whether an adapter of that name exists.
func Exists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// Remove does nothing: the Wintun adapter goes away with the process that holds it.
func Remove(name string) error { return nil }

// Overlaps is not checked on Windows yet.
func Overlaps(p netip.Prefix, own string) ([]string, error) { return nil, nil }

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
