// Package connect joins this machine to a cluster's network: a TUN device whose routes cover
// the cluster's ranges feeds a user-space stack, whose flows go through the shadow agent;
// cluster names resolve through a local DNS server (or a block in /etc/hosts). Everything it
// changes is recorded locally, undone on exit, and undone by the next run after a crash.
package connect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	socks5 "github.com/armon/go-socks5"
	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/netstack"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/progress"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/tun"
	"github.com/kubectl-kt/kt/pkg/tunnel"
	"github.com/kubectl-kt/kt/pkg/undo"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// DNS modes.
const (
	DNSLocal = "localDNS"
	DNSHosts = "hosts"
	DNSNone  = "none"
)

// Config configures Run.
type Config struct {
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	Context    string
	Namespace  string
	Command    string
	Pod        *cluster.PodOptions
	Protocol   portforward.Protocol

	DNSMode       string   // DNSLocal, DNSHosts or DNSNone
	DNSOrder      []string // localDNS sources: "cluster", "upstream", or host[:port]
	HostsNS       []string // namespaces whose Services go into /etc/hosts
	ClusterDomain string
	DNSCacheTTL   time.Duration
	// TCPEarlyFor is how long a TCP destination that accepted a connection takes new ones
	// early (netstack.Options.WarmFor): 0 is the default, 1 minute; negative is never.
	TCPEarlyFor time.Duration
	DNSListen   string // local DNS server address, host:53
	ResolvConf  string
	HostsFile   string

	IncludeIPs, ExcludeIPs []netip.Prefix
	DisablePodIP           bool
	DisableTunRoute        bool
	DisableTUN             bool
	ProxyAddr              string
	ProxyPort              int
	TUNName                string
	MTU                    int
	// ShadowDeployment runs the shadow from a Deployment, which replaces a lost pod.
	ShadowDeployment bool
	// ShareShadow joins the namespace's shared connect shadow (or starts it).
	ShareShadow bool

	// Admin makes the changes that need root (default: netadmin.ForUser, which asks sudo
	// when not root).
	Admin netadmin.Admin

	In          io.Reader
	Out, ErrOut io.Writer
	// Ready, when set, is called once the way to the cluster is up (kubectl kt run starts
	// its process then).
	Ready func()
}

type connector struct {
	cfg     Config
	admin   netadmin.Admin
	sess    atomic.Pointer[session.Session]
	dialer  *tunnel.Dialer
	lock    *Lock
	state   *State
	stateMu sync.Mutex
	names   *dns.Names   // Service names, for the local DNS server
	hosts   *hostsWriter // --dns-mode hosts
	// namespaces waits for the list of namespaces asked for at the start.
	namespaces func() ([]string, error)
	dnsOnce    sync.Once
	dnsc       *dnsConns       // connections to the agent's DNS forwarder
	warmed     <-chan struct{} // closed once openStreams is done
}

func (c *connector) agent() tunnel.PortDialer { return c.sess.Load() }

// Run connects and blocks until ctx ends, then restores everything. A clean teardown after
// ctx ends returns nil.
func Run(ctx context.Context, cfg Config) (err error) {
	log := klog.FromContext(ctx)
	if os.Getenv("GOGC") == "" {
		// connect lives for hours beside the user's IDE: collect garbage twice as often as
		// Go's default and keep the heap close to what is live (mostly TCP buffers).
		debug.SetGCPercent(50)
	}
	pipe.OneProcessor()
	// The binary's startup (flag parsing, client-go's type registrations) is done: its pages
	// leave memory now, before the watches and the session start, not only once connected.
	dropColdPages()
	c := &connector{cfg: cfg, admin: cfg.Admin}
	c.dialer = &tunnel.Dialer{Agent: c.agent}
	server := cfg.RESTConfig.Host
	if c.admin == nil {
		c.admin = netadmin.ForUser(netadmin.HelperOptions{
			Paths: []string{cfg.ResolvConf, cfg.HostsFile}, Stdin: cfg.In, Stdout: cfg.ErrOut, Stderr: cfg.ErrOut,
			Notice: "Setting up the TUN device, routes and DNS as root through sudo (only that; the rest runs as you)",
		})
	}
	defer func() {
		if aerr := c.admin.Close(); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}()

	lock, recovered, err := Acquire(server, c.admin)
	if err != nil {
		return err
	}
	c.lock = lock
	if recovered != nil {
		fmt.Fprintf(cfg.ErrOut, "Cleaned up after an earlier connect that did not exit cleanly (pid %d)\n", recovered.PID)
	}
	c.state = &State{PID: os.Getpid(), Started: time.Now(), Server: server, Context: cfg.Context, Namespace: cfg.Namespace, NetNS: NetNS(), DNSMode: cfg.DNSMode}
	var undo undo.Stack
	defer func() {
		if uerr := undo.Run(30 * time.Second); uerr != nil {
			err = errors.Join(err, fmt.Errorf("restore: %w; run 'kubectl kt clean --local-only'", uerr))
		}
		c.dialer.Close()
		if s := c.sess.Load(); s != nil {
			if serr := s.Close(); serr != nil {
				err = errors.Join(err, fmt.Errorf("delete shadow: %w; run 'kubectl kt clean'", serr))
			}
		}
		lock.Release()
		if err == nil {
			fmt.Fprintln(cfg.ErrOut, "Disconnected: routes, DNS and the shadow pod are removed")
		}
	}()
	if err := c.save(); err != nil {
		return err
	}

	// Service names from a local copy, kept by a watch that starts now, beside the shadow;
	// until it has synced, and where RBAC forbids it, through the tunnel as other names.
	// --dns-mode hosts writes its block from such a copy of its namespaces, watched from now too.
	c.names = dns.NewNames(cfg.ClusterDomain)
	switch cfg.DNSMode {
	case DNSLocal:
		go func() {
			if err := c.names.Run(ctx, cfg.Client, dns.Watch{Current: cfg.Namespace}); err != nil {
				log.V(1).Info("dns: Service names are looked up through the tunnel: they may not be watched", "err", err)
			}
		}()
	case DNSHosts:
		c.hostsWriter().watch(ctx)
	}

	// What connect asks the API server (stale sessions, the cluster's ranges, its namespaces)
	// is asked while the shadow starts: over a slow link each is a round trip that would
	// otherwise come before the pod's creation, or after it runs.
	var stale bytes.Buffer
	staleDone := make(chan struct{})
	go func() {
		defer close(staleDone)
		inventory.WarnStale(ctx, cfg.Client, cfg.Namespace, &stale)
	}()
	// Its warnings come out once, before "Connected", or on the way out if connect fails.
	printStale := sync.OnceFunc(func() { <-staleDone; cfg.ErrOut.Write(stale.Bytes()) })
	defer printStale()
	type found struct {
		routes, ranges []netip.Prefix
		err            error
	}
	discovered := make(chan found, 1)
	go func() {
		r, cr, err := c.routes(ctx, server)
		discovered <- found{r, cr, err}
	}()
	if cfg.DNSMode == DNSLocal && !cfg.DisableTUN {
		c.namespaces = listNamespaces(ctx, cfg.Client)
	}
	type started struct {
		sess *session.Session
		err  error
	}
	sctx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	starting := make(chan started, 1)
	go func() {
		s, err := c.startSession(sctx)
		starting <- started{s, err}
	}()
	// A cluster whose ranges cannot be found fails the command; the shadow, if it was
	// created by then, is deleted again before it returns.
	f := <-discovered
	if f.err != nil {
		cancelStart()
		if st := <-starting; st.sess != nil {
			st.sess.Close()
		}
		return f.err
	}
	routes, clusterRanges := f.routes, f.ranges
	st := <-starting
	if st.err != nil {
		return st.err
	}
	sess := st.sess
	printStale()
	c.sess.Store(sess)
	c.state.Shadow = cfg.Namespace + "/" + sess.Pod.Name
	c.save()
	c.warmed = c.openStreams(ctx)

	if err := c.bringUp(ctx, server, routes, clusterRanges, &undo); err != nil {
		return err
	}
	log.V(1).Info("connected", "routes", len(routes))
	if cfg.Ready != nil {
		cfg.Ready()
	}
	dropColdPages()
	c.supervise(ctx)
	return nil
}

// openStreams opens the streams the first connections and lookups take (the mux sessions,
// the DNS connections to the agent) while the TUN device and the DNS server come up; the
// returned channel is closed when they are open, or failed, or 3 s passed. "Connected" waits
// for it: over a slow link the first lookup through the tunnel then waits for one round trip,
// not two, and the first new connection for two, not three.
func (c *connector) openStreams(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.dialer.Open(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("open the mux sessions ahead", "err", err)
		}
	}()
	if c.cfg.DNSMode == DNSLocal && !c.cfg.DisableTUN {
		wg.Add(1)
		go func() { defer wg.Done(); c.dnsConns().warm(ctx) }()
	}
	go func() { wg.Wait(); cancel(); close(done) }()
	return done
}

// bringUp opens the way to the cluster through the session: the SOCKS5 proxy, or the TUN
// device with its routes and DNS.
func (c *connector) bringUp(ctx context.Context, server string, routes, clusterRanges []netip.Prefix, undo *undo.Stack) error {
	if c.cfg.DisableTUN {
		addr, err := c.startProxy(ctx, undo)
		if err != nil {
			return err
		}
		<-c.warmed
		fmt.Fprintf(c.cfg.ErrOut, "Connected: SOCKS5 proxy on %s (no TUN device). To use it:\n  export ALL_PROXY=socks5h://%s\n", addr, addr)
	} else {
		if err := c.startTUN(ctx, routes, undo); err != nil {
			return err
		}
		desc, err := c.startDNS(ctx, clusterRanges, undo)
		if err != nil {
			return err
		}
		<-c.warmed
		fmt.Fprintf(c.cfg.ErrOut, "Connected to %s through shadow %s\n  routes: %s (dev %s)\n  dns: %s\n",
			server, c.state.Shadow, joinPrefixes(routes), c.state.TUN, desc)
	}
	return nil
}

// routes finds the cluster's ranges and the routes to them (none with --disable-tun).
func (c *connector) routes(ctx context.Context, server string) (routes, clusterRanges []netip.Prefix, err error) {
	cfg := c.cfg
	if cfg.DisableTUN {
		return nil, nil, nil
	}
	svcRanges, err := inventory.ServiceCIDRs(ctx, cfg.Client, cfg.Namespace)
	if err != nil {
		return nil, nil, err
	}
	clusterRanges = append(clusterRanges, svcRanges...)
	if !cfg.DisablePodIP {
		podRanges, err := inventory.PodCIDRs(ctx, cfg.Client, cfg.Namespace)
		if err != nil {
			return nil, nil, err
		}
		clusterRanges = append(clusterRanges, podRanges...)
	}
	routes = Routes(clusterRanges, cfg.IncludeIPs, cfg.ExcludeIPs, apiServerAddrs(ctx, server))
	if len(routes) == 0 && !cfg.DisableTunRoute {
		return nil, nil, fmt.Errorf("nothing to route: every cluster range is excluded; check --exclude-ips")
	}
	return routes, clusterRanges, nil
}

func (c *connector) save() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.lock.Save(c.state)
}

func (c *connector) startSession(ctx context.Context) (*session.Session, error) {
	return session.Start(ctx, c.cfg.RESTConfig, c.cfg.Client, session.Options{
		Namespace: c.cfg.Namespace, Role: wire.RoleConnect, Command: c.cfg.Command,
		Pod: c.cfg.Pod, Protocol: c.cfg.Protocol, Progress: c.cfg.ErrOut, Deployment: c.cfg.ShadowDeployment,
		Shared: c.cfg.ShareShadow,
	})
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// apiServerAddrs are the API server's addresses, which must keep their normal route.
func apiServerAddrs(ctx context.Context, server string) []netip.Addr {
	u, err := url.Parse(server)
	if err != nil {
		return nil
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	return ips
}

func (c *connector) startTUN(ctx context.Context, routes []netip.Prefix, undo *undo.Stack) error {
	name := c.cfg.TUNName
	if name == "" {
		name = "kt%d"
	}
	mtu := c.cfg.MTU
	if mtu == 0 {
		mtu = tun.DefaultMTU
	}
	dev, err := c.admin.CreateTUN(name, mtu)
	if err != nil {
		return err
	}
	c.state.TUN = dev.Name()
	c.save()
	var d netstack.EarlyDialer = c.dialer // new connections to warm destinations save a round trip
	st, err := netstack.New(dev, d, netstack.Options{MTU: mtu, Offset: tun.Offset, WarmFor: c.cfg.TCPEarlyFor})
	if err != nil {
		dev.Close()
		return err
	}
	undo.Push("remove TUN device "+dev.Name(), func(context.Context) error { return st.Close() })
	for _, r := range routes {
		if over, err := tun.Overlaps(r, dev.Name()); err == nil && len(over) > 0 {
			fmt.Fprintf(c.cfg.ErrOut, "warning: cluster range %s overlaps local route %s; traffic to it now goes to the cluster (exclude it with --exclude-ips)\n", r, strings.Join(over, ", "))
		}
	}
	if !c.cfg.DisableTunRoute {
		if err := c.admin.AddRoutes(dev.Name(), routes); err != nil {
			return err
		}
		for _, r := range routes {
			c.state.Routes = append(c.state.Routes, r.String())
		}
	}
	return c.save()
}

// startDNS sets up the chosen DNS mode and describes it.
func (c *connector) startDNS(ctx context.Context, ranges []netip.Prefix, undo *undo.Stack) (string, error) {
	domain := c.cfg.ClusterDomain
	switch c.cfg.DNSMode {
	case DNSNone:
		return "none (cluster names do not resolve; use IPs)", nil
	case DNSHosts:
		return c.startHosts(ctx, undo)
	}
	orig, err := os.ReadFile(c.cfg.ResolvConf)
	if err != nil && !dns.SplitDNSSupported() { // Windows has none; only cluster names come here
		return "", fmt.Errorf("read %s: %w", c.cfg.ResolvConf, err)
	}
	listenHost, _, _ := net.SplitHostPort(c.cfg.DNSListen)
	var upstreams []string
	for _, ns := range dns.ParseResolvConf(orig).Nameservers {
		if ns != listenHost {
			upstreams = append(upstreams, net.JoinHostPort(ns, "53"))
		}
	}
	cls := dns.NewClassifier(domain, []string{c.cfg.Namespace}, ranges)
	if c.namespaces == nil {
		c.namespaces = listNamespaces(ctx, c.cfg.Client)
	}
	if names, err := c.namespaces(); err == nil {
		cls.SetNamespaces(append(names, c.cfg.Namespace))
		go c.refreshNamespaces(ctx, cls)
	}
	order := c.cfg.DNSOrder
	if len(order) == 0 {
		order = []string{"cluster", "upstream"}
	}
	srv := &dns.Server{CacheTTL: c.cfg.DNSCacheTTL, Sources: c.dnsSources(order, upstreams, cls, c.names)}
	pc, l, err := c.admin.ListenDNS(c.cfg.DNSListen)
	if err != nil {
		return "", err
	}
	srv.Serve(pc, l)
	c.dnsConns().refill() // the first lookup through the tunnel need not open a stream
	undo.Push("stop the local DNS server", func(context.Context) error { srv.Close(); c.dnsConns().close(); return nil })
	how, err := c.pointResolver(orig, listenHost, cls, undo)
	if err != nil {
		return "", err
	}
	c.names.Wait(ctx, 2*time.Second) // the first lookups after "Connected" answered here too
	return fmt.Sprintf("localDNS on %s (%s; order %s; upstream %s)", c.cfg.DNSListen, how, strings.Join(order, ","), strings.Join(upstreams, ",")), nil
}

// hostsWriter is connect's writer of the hosts block, made on first use.
func (c *connector) hostsWriter() *hostsWriter {
	if c.hosts == nil {
		nss := c.cfg.HostsNS
		if len(nss) == 0 {
			nss = []string{c.cfg.Namespace}
		}
		c.hosts = &hostsWriter{client: c.cfg.Client, admin: c.admin, path: c.cfg.HostsFile, namespaces: nss, current: c.cfg.Namespace, domain: c.cfg.ClusterDomain}
	}
	return c.hosts
}

// startHosts keeps a block of cluster names in the hosts file.
func (c *connector) startHosts(ctx context.Context, undo *undo.Stack) (string, error) {
	h := c.hostsWriter()
	c.state.Hosts = c.cfg.HostsFile
	c.save()
	hctx, cancel := context.WithCancel(ctx)
	if err := h.start(hctx); err != nil {
		cancel()
		return "", err
	}
	done := make(chan struct{})
	go func() { defer close(done); h.run(hctx) }()
	undo.Push("remove the hosts block", func(context.Context) error {
		cancel()
		<-done
		return c.admin.RemoveHostsBlock(c.cfg.HostsFile)
	})
	return fmt.Sprintf("hosts (%s, namespaces %s)", c.cfg.HostsFile, strings.Join(h.namespaces, ",")), nil
}

// dnsSources are the local DNS server's sources in --dns-mode's order: the cluster (names'
// local copy, else through the shadow; for cluster names only), this machine's upstream servers, or given servers.
func (c *connector) dnsSources(order, upstreams []string, cls *dns.Classifier, names *dns.Names) []dns.Source {
	var sources []dns.Source
	cluster := func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
		if r, err := names.Exchange(ctx, m); err == nil {
			klog.FromContext(ctx).V(4).Info("dns: from the local copy of Service names", "q", m.Question[0].Name)
			return r, nil
		}
		klog.FromContext(ctx).V(4).Info("dns: through the tunnel", "q", m.Question[0].Name)
		return c.clusterDNS(ctx, m)
	}
	for _, o := range order {
		switch o {
		case "cluster":
			sources = append(sources, dns.Source{Name: "cluster", Exchange: cluster, OnlyFor: cls.IsCluster})
		case "upstream":
			for _, u := range upstreams {
				sources = append(sources, dns.Source{Name: "upstream " + u, Exchange: dns.Upstream(u), FinalNX: true})
			}
		default:
			addr := o
			if _, _, err := net.SplitHostPort(o); err != nil {
				addr = net.JoinHostPort(o, "53")
			}
			sources = append(sources, dns.Source{Name: addr, Exchange: dns.Upstream(addr), FinalNX: true})
		}
	}
	return sources
}

// pointResolver sends this machine's lookups to the local DNS server: per-domain entries
// (macOS, Windows), systemd-resolved's per-link DNS on the TUN device, or an edited
// resolv.conf. It returns how, for the "Connected" line.
func (c *connector) pointResolver(orig []byte, listenHost string, cls *dns.Classifier, undo *undo.Stack) (string, error) {
	domain := c.cfg.ClusterDomain
	search := []string{c.cfg.Namespace + ".svc." + domain, "svc." + domain, domain}
	if dns.SplitDNSSupported() {
		// macOS and Windows: per-domain entries for the cluster domain and each namespace
		// (svc.ns); bare Service names need --dns-mode hosts there.
		domains := append([]string{domain}, cls.Namespaces()...)
		c.state.SplitDNS = true
		c.save()
		if err := dns.SplitDNS(c.cfg.DNSListen, domains, os.Getpid()); err != nil {
			dns.RemoveSplitDNS()
			return "", err
		}
		undo.Push("remove the per-domain DNS entries", func(context.Context) error { return dns.RemoveSplitDNS() })
		return fmt.Sprintf("per-domain DNS for %s and %d namespaces", domain, len(domains)-1), nil
	}
	if c.cfg.ResolvConf == "/etc/resolv.conf" && os.Getenv("KT_NO_RESOLVED") == "" && dns.ResolvedRunning(orig) {
		// systemd-resolved: split DNS on the TUN device; it goes with the device.
		if err := c.admin.SetLinkDNS(c.state.TUN, listenHost, search, cls.Namespaces()); err != nil {
			return "", err
		}
		return fmt.Sprintf("systemd-resolved sends %s and the namespaces' names over %s", domain, c.state.TUN), nil
	}
	c.state.ResolvConf = c.cfg.ResolvConf
	if err := c.save(); err != nil {
		return "", err
	}
	if _, err := c.admin.ApplyResolvConf(c.cfg.ResolvConf, listenHost, search, os.Getpid()); err != nil {
		return "", err
	}
	undo.Push("restore "+c.cfg.ResolvConf, func(context.Context) error { return c.admin.RestoreResolvConf(c.cfg.ResolvConf) })
	return c.cfg.ResolvConf + " edited", nil
}

// listNamespaces lists the cluster's namespaces in the background; the function it returns
// waits for the answer.
func listNamespaces(ctx context.Context, client kubernetes.Interface) func() ([]string, error) {
	var names []string
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		var nss *corev1.NamespaceList
		if nss, err = client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
			for _, n := range nss.Items {
				names = append(names, n.Name)
			}
		}
	}()
	return func() ([]string, error) { <-done; return names, err }
}

func (c *connector) refreshNamespaces(ctx context.Context, cls *dns.Classifier) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if nss, err := c.cfg.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
			names := []string{c.cfg.Namespace}
			for _, n := range nss.Items {
				names = append(names, n.Name)
			}
			cls.SetNamespaces(names)
		}
	}
}

// clusterDNS asks the agent's DNS forwarder, on a connection kept ready (dnsConns).
func (c *connector) clusterDNS(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	return c.dnsConns().exchange(ctx, m)
}

func (c *connector) dnsConns() *dnsConns {
	c.dnsOnce.Do(func() {
		c.dnsc = &dnsConns{
			dial: func(ctx context.Context) (net.Conn, any, error) {
				s := c.sess.Load()
				conn, err := s.Dial(ctx, wire.DNSPort)
				return conn, s, err
			},
			owner: func() any { return c.sess.Load() },
		}
	})
	return c.dnsc
}

// startProxy runs a local SOCKS5 proxy whose connections go through the agent, which also
// resolves names, so cluster names work with socks5h.
func (c *connector) startProxy(ctx context.Context, undo *undo.Stack) (string, error) {
	addr := net.JoinHostPort(c.cfg.ProxyAddr, strconv.Itoa(c.cfg.ProxyPort))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("SOCKS5 proxy on %s: %w; choose another --proxy-port", addr, err)
	}
	if a, err := netip.ParseAddr(c.cfg.ProxyAddr); c.cfg.ProxyAddr != "localhost" && (err != nil || !a.IsLoopback()) {
		fmt.Fprintf(c.cfg.ErrOut, "warning: the SOCKS5 proxy on %s takes connections from other machines, without authentication: whoever reaches it reaches the cluster as you\n", addr)
	}
	srv, err := socks5.New(&socks5.Config{
		Resolver: nopResolver{},
		Dial: func(ctx context.Context, _, hostport string) (net.Conn, error) {
			conn, err := c.dialer.DialHost(ctx, hostport)
			if err != nil {
				return nil, err
			}
			return tcpAddrConn{conn}, nil
		},
	})
	if err != nil {
		l.Close()
		return "", err
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() {
					if r := recover(); r != nil {
						klog.FromContext(ctx).Error(fmt.Errorf("%v", r), "SOCKS5 connection failed")
						conn.Close()
					}
				}()
				srv.ServeConn(conn)
			}()
		}
	}()
	undo.Push("stop the SOCKS5 proxy", func(context.Context) error { return l.Close() })
	c.state.Proxy = addr
	c.save()
	return addr, nil
}

// tcpAddrConn reports TCP addresses: go-socks5 requires them of the conns it dials.
type tcpAddrConn struct{ net.Conn }

func (tcpAddrConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4zero} }
func (tcpAddrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// CloseWrite passes a half-close on, as go-socks5 expects of TCP conns.
func (c tcpAddrConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// nopResolver leaves names unresolved, for the agent to resolve inside the cluster.
type nopResolver struct{}

func (nopResolver) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

// supervise keeps the session alive until ctx ends: it refreshes the heartbeat, and when the
// port-forward drops or the shadow pod goes away it reconnects or starts a new shadow.
func (c *connector) supervise(ctx context.Context) {
	log := klog.FromContext(ctx)
	hb := time.NewTicker(30 * time.Second) // re-arms the pod watch now and then
	defer hb.Stop()
	outage := &session.Outage{W: c.cfg.ErrOut, What: "connection"}
	for {
		sess := c.sess.Load()
		sc, err := sess.SSH(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// A tunnel that fails is not a lost shadow: only the API server's word is.
			gone, apiErr := session.PodGone(ctx, c.cfg.Client, c.cfg.Namespace, sess.Pod.Name)
			if gone {
				c.recover(ctx, "ssh: "+err.Error())
			} else {
				outage.Failed(ctx, err, apiErr)
			}
			continue
		}
		outage.Up()
		wctx, stop := context.WithCancel(ctx)
		gone := c.watchPod(wctx, sess.Pod)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-sc.Done():
			log.V(1).Info("tunnel to the shadow dropped; reconnecting")
			if sess.PodGone(ctx) {
				c.recover(ctx, "shadow pod gone")
			}
		case <-gone:
			c.recover(ctx, "shadow pod deleted")
		case <-hb.C:
		}
		stop()
	}
}

// watchPod returns a channel closed when the pod is deleted or stops running.
func (c *connector) watchPod(ctx context.Context, pod *corev1.Pod) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		w, err := c.cfg.Client.CoreV1().Pods(pod.Namespace).Watch(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: pod.ResourceVersion})
		if err != nil {
			return
		}
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, _ := ev.Object.(*corev1.Pod)
			if ev.Type == watch.Deleted || (p != nil && (p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning)) {
				close(ch)
				return
			}
		}
	}()
	return ch
}

// use makes ns the session, closes the one it replaces and records the new shadow.
func (c *connector) use(ns *session.Session) {
	old := c.sess.Swap(ns)
	go old.Close()
	c.stateMu.Lock()
	c.state.Shadow = c.cfg.Namespace + "/" + ns.Pod.Name
	c.stateMu.Unlock()
	c.save()
	fmt.Fprintf(c.cfg.ErrOut, "Reconnected through shadow %s\n", c.state.Shadow)
}

// recover replaces the session with a new shadow, retrying until it works or ctx ends. A
// shadow Deployment's replacement pod is used when it comes.
func (c *connector) recover(ctx context.Context, why string) {
	if cur := c.sess.Load(); cur.Deployment() != "" {
		fmt.Fprintf(c.cfg.ErrOut, "Lost the shadow pod (%s); waiting for deployment %s to replace it\n", why, cur.Deployment())
		wait := progress.Start(c.cfg.ErrOut, "Waiting for the replacement pod")
		ns, err := cur.NextPod(ctx)
		wait.Stop()
		if err == nil {
			c.use(ns)
			return
		}
		fmt.Fprintf(c.cfg.ErrOut, "warning: no replacement pod: %v\n", err)
	}
	fmt.Fprintf(c.cfg.ErrOut, "Lost the shadow (%s); starting a new one\n", why)
	for delay := 500 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 5*time.Second) {
		ns, err := c.startSession(ctx)
		if err == nil {
			c.use(ns)
			return
		}
		fmt.Fprintf(c.cfg.ErrOut, "warning: new shadow failed: %v; retrying in %s\n", err, delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}
