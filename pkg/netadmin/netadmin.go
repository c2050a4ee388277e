// Package netadmin makes the changes to this machine that connect needs root for: the TUN
// device and its routes, the local DNS server's port 53, resolv.conf and the hosts file. As
// root they are made directly; as a normal user a helper started once through sudo makes
// them, while everything that talks to the cluster (kubeconfig, credential plugins) stays in
// the user's own process. The helper undoes what it did when that process goes away, even
// when it is killed.
package netadmin

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/tun"
)

// HelperCommand is the hidden kubectl-kt command that runs the helper.
const HelperCommand = "__netadmin"

// helperPaths are the only files the helper edits. Whoever may run the helper through sudo
// can have it do only what connect needs: a TUN device of its own with routes into it, DNS
// sockets on loopback, kt's lines in resolv.conf and in the hosts file, never other files.
var helperPaths = []string{"/etc/resolv.conf", "/etc/hosts"}

// CheckPaths tells whether a normal user's connect may edit these files (through the helper).
func CheckPaths(paths ...string) error {
	for _, p := range paths {
		if p != "" && !slices.Contains(helperPaths, p) {
			return fmt.Errorf("as a normal user, connect edits only %s (through sudo), not %s: run it as root to edit another file", strings.Join(helperPaths, " and "), p)
		}
	}
	return nil
}

// Admin makes the privileged changes.
type Admin interface {
	CreateTUN(name string, mtu int) (*tun.Device, error)
	AddRoutes(dev string, routes []netip.Prefix) error
	RemoveTUN(name string) error
	// ListenDNS opens UDP and TCP sockets on addr, which may be a privileged port.
	ListenDNS(addr string) (net.PacketConn, net.Listener, error)
	ApplyResolvConf(path, server string, search []string, pid int) ([]byte, error)
	RestoreResolvConf(path string) error
	WriteHostsBlock(path string, entries []dns.HostEntry) error
	RemoveHostsBlock(path string) error
	// SetLinkDNS gives the TUN device per-link DNS in systemd-resolved (dns.ResolvedCommands).
	SetLinkDNS(link, server string, search, namespaces []string) error
	// Close ends the helper, if any, once its work is undone.
	Close() error
}

// Direct makes the changes in this process, which must have the privileges.
type Direct struct{}

func (Direct) CreateTUN(name string, mtu int) (*tun.Device, error) { return tun.Create(name, mtu) }
func (Direct) AddRoutes(dev string, routes []netip.Prefix) error   { return tun.AddRoutes(dev, routes) }
func (Direct) RemoveTUN(name string) error                         { return tun.Remove(name) }
func (Direct) ListenDNS(addr string) (net.PacketConn, net.Listener, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("local DNS server on %s: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("local DNS server on %s: %w", addr, err)
	}
	return pc, l, nil
}
func (Direct) ApplyResolvConf(path, server string, search []string, pid int) ([]byte, error) {
	return dns.ApplyResolvConf(path, server, search, pid)
}
func (Direct) RestoreResolvConf(path string) error { return dns.RestoreResolvConf(path) }
func (Direct) WriteHostsBlock(path string, entries []dns.HostEntry) error {
	if err := checkHostEntries(entries); err != nil {
		return err
	}
	return dns.WriteHostsBlock(path, entries)
}
func (Direct) RemoveHostsBlock(path string) error { return dns.RemoveHostsBlock(path) }
func (Direct) SetLinkDNS(link, server string, search, namespaces []string) error {
	if err := tun.AddAddress(link); err != nil { // resolved ignores a link without one
		return err
	}
	return dns.ApplyResolved(dns.ResolvedCommands(link, server, search, namespaces))
}
func (Direct) Close() error { return nil }

// HelperOptions configures the sudo'd helper.
type HelperOptions struct {
	// Paths are the only files the helper may edit (resolv.conf, the hosts file).
	Paths []string
	// Stdin, Stdout and Stderr are sudo's, so that it can ask for a password.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Notice is printed once, before sudo runs.
	Notice string
}

// ForUser returns Direct as root, and otherwise an Admin that starts the sudo'd helper on
// first use (so nothing asks for a password unless a change is needed).
func ForUser(opts HelperOptions) Admin {
	if os.Geteuid() == 0 || runtime.GOOS == "windows" { // Windows: Wintun says when not Administrator
		return Direct{}
	}
	return &lazy{opts: opts}
}

type lazy struct {
	opts HelperOptions
	mu   sync.Mutex
	h    Admin
	err  error
}

// Allow adds files the helper may edit, before it starts.
func (l *lazy) Allow(paths ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range paths {
		if p != "" && !slices.Contains(l.opts.Paths, p) {
			l.opts.Paths = append(l.opts.Paths, p)
		}
	}
}

// Allow adds files that a helper, if admin starts one, may edit.
func Allow(admin Admin, paths ...string) {
	if l, ok := admin.(*lazy); ok {
		l.Allow(paths...)
	}
}

func (l *lazy) get() (Admin, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil && l.err == nil {
		if l.opts.Notice != "" && l.opts.Stderr != nil {
			fmt.Fprintln(l.opts.Stderr, l.opts.Notice)
		}
		var h Admin
		h, l.err = StartHelper(l.opts)
		if l.err == nil {
			l.h = h
		}
	}
	return l.h, l.err
}

func (l *lazy) CreateTUN(name string, mtu int) (*tun.Device, error) {
	h, err := l.get()
	if err != nil {
		return nil, err
	}
	return h.CreateTUN(name, mtu)
}
func (l *lazy) AddRoutes(dev string, routes []netip.Prefix) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.AddRoutes(dev, routes)
}
func (l *lazy) RemoveTUN(name string) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.RemoveTUN(name)
}
func (l *lazy) ListenDNS(addr string) (net.PacketConn, net.Listener, error) {
	h, err := l.get()
	if err != nil {
		return nil, nil, err
	}
	return h.ListenDNS(addr)
}
func (l *lazy) ApplyResolvConf(path, server string, search []string, pid int) ([]byte, error) {
	h, err := l.get()
	if err != nil {
		return nil, err
	}
	return h.ApplyResolvConf(path, server, search, pid)
}
func (l *lazy) RestoreResolvConf(path string) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.RestoreResolvConf(path)
}
func (l *lazy) WriteHostsBlock(path string, entries []dns.HostEntry) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.WriteHostsBlock(path, entries)
}
func (l *lazy) RemoveHostsBlock(path string) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.RemoveHostsBlock(path)
}
func (l *lazy) SetLinkDNS(link, server string, search, namespaces []string) error {
	h, err := l.get()
	if err != nil {
		return err
	}
	return h.SetLinkDNS(link, server, search, namespaces)
}
func (l *lazy) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return nil
	}
	err := l.h.Close()
	l.h, l.err = nil, errors.New("closed")
	return err
}
