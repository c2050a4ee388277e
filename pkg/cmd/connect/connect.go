// Package connect implements `kubectl kt connect`.
package connect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/portforward"
)

// Options holds the flags of connect.
type Options struct {
	DNSMode          string
	ClusterDomain    string
	DNSCacheTTL      time.Duration
	TCPEarlyFor      time.Duration
	DNSAddr          string
	ShadowDeployment bool
	ShareShadow      bool
	IncludeIPs       string
	ExcludeIPs       string
	DisablePodIP     bool
	DisableTunRoute  bool
	DisableTUN       bool
	ProxyAddr        string
	AllowRemoteProxy bool
	ProxyPort        int
	TUNName          string
	MTU              int
	Protocol         string
	ResolvConf       string
	HostsFile        string
	Pod              *cluster.PodOptions

	cfg connect.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	hosts, dnsAddr := "/etc/hosts", "127.0.0.153:53"
	switch runtime.GOOS {
	case "darwin":
		dnsAddr = "127.0.0.1:10053" // /etc/resolver files name the port; 127.0.0.1 is lo0's only address
	case "windows":
		hosts = filepath.Join(os.Getenv("SystemRoot"), "System32", "drivers", "etc", "hosts")
		dnsAddr = "127.0.0.1:53" // NRPT rules reach port 53 only
	}
	if p := os.Getenv("HOSTS_PATH"); p != "" {
		hosts = p
	}
	return &Options{
		DNSMode:       connect.DNSLocal,
		ClusterDomain: "cluster.local",
		DNSCacheTTL:   60 * time.Second,
		TCPEarlyFor:   time.Minute,
		DNSAddr:       dnsAddr,
		ProxyAddr:     "127.0.0.1",
		ProxyPort:     2223,
		ResolvConf:    "/etc/resolv.conf",
		HostsFile:     hosts,
		Pod:           cluster.NewPodOptions(),
		IOStreams:     streams,
	}
}

// NewCmdConnect returns the connect command.
func NewCmdConnect(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Reach the cluster's pod IPs, Service IPs and DNS names from this machine",
		Long: `Connect starts a shadow pod in the namespace and routes the cluster's Service and pod ranges
into a local TUN device, so that this machine reaches pod IPs, ClusterIPs and cluster DNS names
(svc, svc.ns, svc.ns.svc.cluster.local, StatefulSet pod names) as if it ran in the cluster.
Ctrl-C restores every route, DNS setting and file, and deletes the shadow.`,
		Example: `  sudo kubectl kt connect
  kubectl kt connect -n dev --dns-mode hosts:dev,shared
  kubectl kt connect --disable-tun          # no root: a SOCKS5 proxy on 127.0.0.1:2223`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, cmd); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.DNSMode, "dns-mode", o.DNSMode, "localDNS[:ORDER] (a local DNS server; ORDER like cluster,upstream or upstream,cluster,10.0.0.2), hosts[:NS1,NS2] (a block in /etc/hosts), or none.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "The cluster's DNS domain.")
	kube.DurationVar(fs, &o.DNSCacheTTL, "dns-cache-ttl", o.DNSCacheTTL, "Longest time the local DNS server caches an answer (never longer than the record's TTL).")
	kube.DurationVar(fs, &o.TCPEarlyFor, "tcp-early-for", o.TCPEarlyFor, "For this long after a destination accepted a TCP connection, new connections to it complete their handshake at once and their first bytes go with the dial, a round trip sooner; should it refuse after all, that connection is reset instead of refused. 0 turns this off.")
	fs.BoolVar(&o.ShareShadow, "share-shadow", false, "Use the namespace's shared shadow (kt-connect-shared) with other developers, starting it if needed; the last one to leave removes it. Anyone who may port-forward to it can use it.")
	fs.BoolVar(&o.ShadowDeployment, "use-shadow-deployment", false, "Run the shadow from a Deployment, which replaces its pod if it is deleted or its node goes away; the shadow deletes the Deployment itself once you are gone.")
	fs.StringVar(&o.DNSAddr, "dns-addr", o.DNSAddr, "Address of the local DNS server (localDNS mode).")
	fs.StringVar(&o.IncludeIPs, "include-ips", o.IncludeIPs, "Extra CIDRs or IPs to route to the cluster, comma-separated.")
	fs.StringVar(&o.ExcludeIPs, "exclude-ips", o.ExcludeIPs, "CIDRs or IPs never to route to the cluster, comma-separated.")
	fs.BoolVar(&o.DisablePodIP, "disable-pod-ip", o.DisablePodIP, "Route only Service IPs, not pod IPs.")
	fs.BoolVar(&o.DisableTunRoute, "disable-tun-route", o.DisableTunRoute, "Create the TUN device but add no routes.")
	fs.BoolVar(&o.DisableTUN, "disable-tun", o.DisableTUN, "No TUN device: only a local SOCKS5 proxy (needs no root).")
	fs.StringVar(&o.ProxyAddr, "proxy-addr", o.ProxyAddr, "Listen address of the SOCKS5 proxy (with --disable-tun).")
	fs.IntVar(&o.ProxyPort, "proxy-port", o.ProxyPort, "Port of the SOCKS5 proxy (with --disable-tun).")
	fs.BoolVar(&o.AllowRemoteProxy, "allow-remote-proxy", false, "Let --proxy-addr be an address other machines reach: the SOCKS5 proxy has no authentication, so anyone who reaches it reaches your cluster.")
	fs.StringVar(&o.TUNName, "tun-name", "", "Name of the TUN device (default kt0, kt1, …).")
	fs.IntVar(&o.MTU, "mtu", 0, "MTU of the TUN device (default 16384).")
	fs.StringVar(&o.Protocol, "port-forward-protocol", "", "Tunnel protocol to the API server: spdy, websocket, or empty for spdy with a WebSocket fallback (for proxies that refuse SPDY).")
	fs.StringVar(&o.ResolvConf, "resolv-conf", o.ResolvConf, "The resolver file localDNS edits.")
	fs.StringVar(&o.HostsFile, "hosts-file", o.HostsFile, "The hosts file the hosts mode edits ($HOSTS_PATH).")
	fs.MarkHidden("resolv-conf")
	kube.AddPodFlags(fs, o.Pod)
	return cmd
}

// dnsMode parses --dns-mode: the mode, and the lookup order (localDNS:…) or the namespaces
// (hosts:…) after its colon.
func dnsMode(v string) (mode string, order, hostsNS []string, err error) {
	mode, arg, _ := strings.Cut(v, ":")
	switch mode {
	case connect.DNSLocal:
		for _, s := range strings.Split(arg, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if s != "cluster" && s != "upstream" {
				host := s
				if h, _, err := net.SplitHostPort(s); err == nil {
					host = h
				}
				if _, err := netip.ParseAddr(host); err != nil {
					return "", nil, nil, fmt.Errorf("--dns-mode %s: %q is not cluster, upstream or an IP[:port]", v, s)
				}
			}
			order = append(order, s)
		}
	case connect.DNSHosts:
		for _, ns := range strings.Split(arg, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				hostsNS = append(hostsNS, ns)
			}
		}
	case connect.DNSNone:
	default:
		return "", nil, nil, fmt.Errorf("--dns-mode %q: use localDNS, localDNS:cluster,upstream, hosts, hosts:NS1,NS2 or none", v)
	}
	return mode, order, hostsNS, nil
}

// Validate checks the flags; it changes nothing.
func (o *Options) Validate() error {
	if _, _, _, err := dnsMode(o.DNSMode); err != nil {
		return err
	}
	if _, err := connect.ParsePrefixes("include-ips", o.IncludeIPs); err != nil {
		return err
	}
	if _, err := connect.ParsePrefixes("exclude-ips", o.ExcludeIPs); err != nil {
		return err
	}
	if !o.DisableTUN && (o.ProxyAddr != "127.0.0.1" || o.ProxyPort != 2223) {
		return fmt.Errorf("--proxy-addr and --proxy-port apply only with --disable-tun")
	}
	if err := checkProxyAddr(o.ProxyAddr, o.AllowRemoteProxy); err != nil {
		return err
	}
	if o.ProxyPort < 1 || o.ProxyPort > 65535 {
		return fmt.Errorf("--proxy-port %d is not a port number", o.ProxyPort)
	}
	if _, _, err := net.SplitHostPort(o.DNSAddr); err != nil {
		return fmt.Errorf("--dns-addr %q: want host:port, e.g. 127.0.0.153:53", o.DNSAddr)
	}
	switch portforward.Protocol(o.Protocol) {
	case portforward.ProtocolAuto, portforward.ProtocolWebSocket, portforward.ProtocolSPDY:
	default:
		return fmt.Errorf("--port-forward-protocol %q: use websocket or spdy, or leave it out", o.Protocol)
	}
	if o.ShareShadow && o.ShadowDeployment {
		return fmt.Errorf("--share-shadow and --use-shadow-deployment cannot be combined yet; choose one")
	}
	if o.TCPEarlyFor < 0 {
		return fmt.Errorf("--tcp-early-for %v: use 0 to turn early connections off, or a positive duration such as 1m", o.TCPEarlyFor)
	}
	if o.MTU != 0 && (o.MTU < 1280 || o.MTU > 65535) {
		return fmt.Errorf("--mtu %d: use a value from 1280 to 65535", o.MTU)
	}
	return o.Pod.Validate()
}

// checkProxyAddr refuses a SOCKS5 listen address that is not loopback unless allowed: the
// proxy takes anyone, and through it the cluster, so it is never opened to a network by
// accident (--proxy-addr 0.0.0.0 used to do so without a word).
func checkProxyAddr(addr string, allowRemote bool) error {
	a, err := netip.ParseAddr(addr)
	if err == nil && a.IsLoopback() {
		return nil
	}
	if addr == "localhost" {
		return nil
	}
	if err != nil && net.ParseIP(addr) == nil && addr != "" {
		// a host name: only loopback names are taken
		return fmt.Errorf("--proxy-addr %q: give an IP address (127.0.0.1 by default)", addr)
	}
	if !allowRemote {
		return fmt.Errorf("--proxy-addr %s is not a loopback address: the SOCKS5 proxy has no authentication, so anyone who reaches it reaches your cluster; add --allow-remote-proxy if that is what you want", addr)
	}
	return nil
}

// Complete builds the clients and the run's configuration; it changes nothing.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, cmd *cobra.Command) error {
	if !o.DisableTUN && os.Geteuid() != 0 && runtime.GOOS == "linux" {
		// The TUN device, routes and DNS are set up by a helper started through sudo.
		if _, err := exec.LookPath("sudo"); err != nil {
			return fmt.Errorf("connect needs root for its TUN device, routes and DNS, and sudo is not installed: run it as root, or use --disable-tun for a SOCKS5 proxy that needs none")
		}
		edits := o.ResolvConf
		if strings.HasPrefix(o.DNSMode, connect.DNSHosts) {
			edits = o.HostsFile
		}
		if err := netadmin.CheckPaths(edits); err != nil && !strings.HasPrefix(o.DNSMode, connect.DNSNone) {
			return err
		}
	}
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	raw, _ := f.ToRawKubeConfigLoader().RawConfig()
	ctxName := raw.CurrentContext
	if fl := cmd.Flags().Lookup("context"); fl != nil && fl.Value.String() != "" {
		ctxName = fl.Value.String()
	}
	o.cfg.RESTConfig, o.cfg.Client, o.cfg.Namespace, o.cfg.Context = rc, client, ns, ctxName
	// Unparsable flags leave these empty, and Validate refuses them.
	o.cfg.DNSMode, o.cfg.DNSOrder, o.cfg.HostsNS, _ = dnsMode(o.DNSMode)
	o.cfg.IncludeIPs, _ = connect.ParsePrefixes("include-ips", o.IncludeIPs)
	o.cfg.ExcludeIPs, _ = connect.ParsePrefixes("exclude-ips", o.ExcludeIPs)
	o.cfg.Command = kube.CommandLine()
	o.cfg.Pod = o.Pod
	o.cfg.Protocol = portforward.Protocol(o.Protocol)
	o.cfg.ClusterDomain = o.ClusterDomain
	o.cfg.DNSCacheTTL = o.DNSCacheTTL
	o.cfg.TCPEarlyFor = o.TCPEarlyFor
	if o.TCPEarlyFor == 0 {
		o.cfg.TCPEarlyFor = -1 // off; the Config's zero is the default
	}
	o.cfg.DNSListen = o.DNSAddr
	o.cfg.ResolvConf, o.cfg.HostsFile = o.ResolvConf, o.HostsFile
	o.cfg.DisablePodIP, o.cfg.DisableTunRoute, o.cfg.DisableTUN = o.DisablePodIP, o.DisableTunRoute, o.DisableTUN
	o.cfg.ProxyAddr, o.cfg.ProxyPort = o.ProxyAddr, o.ProxyPort
	o.cfg.TUNName, o.cfg.MTU = o.TUNName, o.MTU
	o.cfg.ShadowDeployment, o.cfg.ShareShadow = o.ShadowDeployment, o.ShareShadow
	o.cfg.In, o.cfg.Out, o.cfg.ErrOut = o.In, o.Out, o.ErrOut
	return nil
}

// Config is the configuration Complete built, for kubectl kt run.
func (o *Options) Config() connect.Config { return o.cfg }

// Run connects until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	return connect.Run(ctx, o.cfg)
}
