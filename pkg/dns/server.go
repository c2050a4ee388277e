// Package dns is connect's local DNS: a server that answers cluster names through the agent
// and everything else from the original upstream, the classification of names, and the
// operating system's resolver configuration with its undo (resolv.conf, /etc/hosts).
package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"k8s.io/klog/v2"
)

// Exchanger answers one query.
type Exchanger func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error)

// Source is one place to ask, in order.
type Source struct {
	Name     string // "cluster", "upstream" or an address, for logs
	Exchange Exchanger
	OnlyFor  func(name string) bool // nil: every name
	FinalNX  bool                   // an NXDOMAIN from here ends the search
}

// Server is the local DNS server.
type Server struct {
	Sources  []Source
	CacheTTL time.Duration

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
	srvs  []*mdns.Server
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	msg     *mdns.Msg
	expires time.Time
}

// Listen serves UDP and TCP on addr (host:port) until Close.
func (s *Server) Listen(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("local DNS server on %s: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("local DNS server on %s: %w", addr, err)
	}
	s.Serve(pc, l)
	return nil
}

// Serve answers on sockets opened elsewhere (by a privileged helper, for port 53).
func (s *Server) Serve(pc net.PacketConn, l net.Listener) {
	s.cache = map[cacheKey]cacheEntry{}
	s.srvs = []*mdns.Server{{PacketConn: pc, Handler: s}, {Listener: l, Handler: s}}
	for _, srv := range s.srvs {
		go srv.ActivateAndServe()
	}
}

// Close stops the server.
func (s *Server) Close() {
	// Queries still waiting on a source (a tunnel that went quiet) get a second, not their
	// whole timeout each: whoever asked has given up by now.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range s.srvs {
		srv.ShutdownContext(ctx)
	}
}

// ServeDNS implements mdns.Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	resp := s.Resolve(ctx, r)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := 512
		if o := r.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// Resolve answers r from the cache or the sources, in order.
func (s *Server) Resolve(ctx context.Context, r *mdns.Msg) *mdns.Msg {
	if len(r.Question) != 1 {
		m := new(mdns.Msg)
		return m.SetRcode(r, mdns.RcodeFormatError)
	}
	q := r.Question[0]
	key := cacheKey{strings.ToLower(q.Name), q.Qtype}
	if m := s.cached(key); m != nil {
		m.Id = r.Id
		return m
	}
	var nx *mdns.Msg
	for _, src := range s.Sources {
		if src.OnlyFor != nil && !src.OnlyFor(q.Name) {
			continue
		}
		resp, err := src.Exchange(ctx, r)
		if err != nil {
			klog.FromContext(ctx).V(2).Info("dns: source failed", "source", src.Name, "q", q.Name, "err", err)
			continue
		}
		klog.FromContext(ctx).V(4).Info("dns", "q", q.Name, "type", mdns.TypeToString[q.Qtype], "source", src.Name, "rcode", mdns.RcodeToString[resp.Rcode], "answers", len(resp.Answer))
		if resp.Rcode == mdns.RcodeNameError {
			nx = resp
			if src.FinalNX {
				break
			}
			continue
		}
		if resp.Rcode != mdns.RcodeSuccess {
			continue
		}
		resp.Id = r.Id
		s.store(key, resp)
		return resp
	}
	if nx != nil {
		nx.Id = r.Id
		s.store(key, nx)
		return nx
	}
	m := new(mdns.Msg)
	return m.SetRcode(r, mdns.RcodeServerFailure)
}

func (s *Server) cached(k cacheKey) *mdns.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cache[k]
	if !ok || time.Now().After(e.expires) {
		return nil
	}
	return e.msg.Copy()
}

// store caches a reply for the smaller of its records' TTL and CacheTTL (negative replies
// for half of that).
func (s *Server) store(k cacheKey, m *mdns.Msg) {
	if s.CacheTTL <= 0 {
		return
	}
	ttl := s.CacheTTL
	for _, rr := range append(append([]mdns.RR{}, m.Answer...), m.Ns...) {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	if len(m.Answer) == 0 {
		ttl /= 2
	}
	if ttl <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) > 10000 {
		s.cache = map[cacheKey]cacheEntry{}
	}
	s.cache[k] = cacheEntry{m.Copy(), time.Now().Add(ttl)}
}

// Upstream returns an Exchanger that asks addr (host:port) over UDP, retrying over TCP when
// the reply is truncated.
func Upstream(addr string) Exchanger {
	udp := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
	tcp := &mdns.Client{Net: "tcp", Timeout: 3 * time.Second}
	return func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
		resp, _, err := udp.ExchangeContext(ctx, m, addr)
		if err == nil && resp.Truncated {
			resp, _, err = tcp.ExchangeContext(ctx, m, addr)
		}
		return resp, err
	}
}

// Classifier tells cluster names from others.
type Classifier struct {
	Domain string // cluster.local
	mu     sync.RWMutex
	ns     map[string]bool
	ranges []netip.Prefix
}

// NewClassifier returns a classifier for a cluster domain, namespaces and the cluster's ranges
// (for reverse lookups).
func NewClassifier(domain string, namespaces []string, ranges []netip.Prefix) *Classifier {
	c := &Classifier{Domain: strings.Trim(strings.ToLower(domain), "."), ranges: ranges}
	c.SetNamespaces(namespaces)
	return c
}

// SetNamespaces replaces the known namespaces.
func (c *Classifier) SetNamespaces(ns []string) {
	m := map[string]bool{}
	for _, n := range ns {
		m[strings.ToLower(n)] = true
	}
	c.mu.Lock()
	c.ns = m
	c.mu.Unlock()
}

// Namespaces returns the known namespaces, sorted.
func (c *Classifier) Namespaces() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	for n := range c.ns {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// IsCluster reports whether name may be a cluster name: under the cluster domain, a single
// label, ending in "svc" or a namespace, or the reverse name of a cluster address.
func (c *Classifier) IsCluster(name string) bool {
	n := strings.Trim(strings.ToLower(name), ".")
	if n == "" {
		return false
	}
	if n == c.Domain || strings.HasSuffix(n, "."+c.Domain) {
		return true
	}
	if strings.HasSuffix(n, ".arpa") {
		a, ok := reverseAddr(n)
		if !ok {
			return false
		}
		for _, p := range c.ranges {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	labels := strings.Split(n, ".")
	last := labels[len(labels)-1]
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(labels) == 1 || last == "svc" || c.ns[last]
}

// reverseAddr parses an in-addr.arpa or ip6.arpa name.
func reverseAddr(n string) (netip.Addr, bool) {
	if s, ok := strings.CutSuffix(n, ".in-addr.arpa"); ok {
		p := strings.Split(s, ".")
		if len(p) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(p[3] + "." + p[2] + "." + p[1] + "." + p[0])
		return a, err == nil
	}
	if s, ok := strings.CutSuffix(n, ".ip6.arpa"); ok {
		p := strings.Split(s, ".")
		if len(p) != 32 {
			return netip.Addr{}, false
		}
		var b strings.Builder
		for i := 31; i >= 0; i-- {
			b.WriteString(p[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(b.String())
		return a, err == nil
	}
	return netip.Addr{}, false
}
