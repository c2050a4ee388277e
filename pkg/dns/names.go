package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// ErrPass is a source's way to say that a name is not its to answer: the next source is
// asked, and nothing is logged.
var ErrPass = errors.New("not this source's name")

// localTTL is the TTL of the records Names answers, CoreDNS's default.
const localTTL = 5

// Names is a local copy of the cluster's Service names, kept current by a watch, so that a
// lookup of a Service costs no round trip to the cluster. It answers A, AAAA and SRV for the
// Services that have cluster IPs, and NXDOMAIN for a Service name that does not exist in a
// namespace it watches, including the names glibc makes by appending the search list. What it
// cannot know it passes on (ErrPass): headless Services (their pods' names), ExternalName
// Services, pod names, and namespaces it does not watch.
type Names struct {
	domain string
	// every namespace is watched; else only one
	all       bool
	namespace string

	mu     sync.RWMutex
	svcs   map[string]*service // by "name.namespace"
	synced atomic.Bool
	ready  chan struct{} // closed once synced, or when Run gives up
	once   sync.Once
}

// service is what Names keeps of a Service: nothing else of it stays in memory.
type service struct {
	ips      []netip.Addr
	ports    []corev1.ServicePort
	headless bool
	external bool
}

// NewNames returns an empty Names for the cluster domain; Run fills it.
func NewNames(domain string) *Names {
	return &Names{domain: strings.Trim(strings.ToLower(domain), "."), svcs: map[string]*service{}, ready: make(chan struct{})}
}

// Wait waits up to d for Run's first list, so that the first lookups are answered here too.
func (n *Names) Wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.ready:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (n *Names) markReady() { n.once.Do(func() { close(n.ready) }) }

// Run watches Services, in every namespace when the client may list and watch them there,
// else in namespace, until ctx ends. It returns an error (and Names passes every name on)
// when it may watch neither.
func (n *Names) Run(ctx context.Context, client kubernetes.Interface, namespace string) error {
	defer n.markReady()
	n.namespace = namespace
	scope := metav1.NamespaceAll
	if err := mayWatch(ctx, client, scope); err != nil {
		scope = namespace
		if err := mayWatch(ctx, client, scope); err != nil {
			return err
		}
	}
	n.all = scope == metav1.NamespaceAll
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			return client.CoreV1().Services(scope).List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().Services(scope).Watch(ctx, o)
		},
	}
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Service{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { n.set(o) },
			UpdateFunc: func(_, o any) { n.set(o) },
			DeleteFunc: func(o any) { n.remove(o) },
		},
		// keep only what a name needs: 10000 Services in a few MiB
		Transform: func(o any) (any, error) {
			if s, ok := o.(*corev1.Service); ok {
				return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion},
					Spec: corev1.ServiceSpec{Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs, Ports: s.Spec.Ports}}, nil
			}
			return o, nil
		},
	})
	// The reflector's notes (a watch that ended with the network) are for -v 3, not the user.
	go informer.RunWithContext(klog.NewContext(ctx, klog.FromContext(ctx).V(3)))
	for !informer.HasSynced() { // polled finely: connect waits for it
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	n.synced.Store(true)
	return nil
}

// mayWatch tries a list and a watch of Services in ns: a watch that is refused once would
// be retried, and logged, for as long as connect runs.
func mayWatch(ctx context.Context, client kubernetes.Interface, ns string) error {
	l, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	one := int64(1)
	w, err := client.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, TimeoutSeconds: &one})
	if err != nil {
		return err
	}
	w.Stop()
	return nil
}

func (n *Names) set(o any) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	e := &service{ports: s.Spec.Ports, headless: s.Spec.ClusterIP == corev1.ClusterIPNone, external: s.Spec.Type == corev1.ServiceTypeExternalName}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			e.ips = append(e.ips, a)
		}
	}
	n.mu.Lock()
	n.svcs[strings.ToLower(s.Name+"."+s.Namespace)] = e
	n.mu.Unlock()
}

func (n *Names) remove(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	if s, ok := o.(*corev1.Service); ok {
		n.mu.Lock()
		delete(n.svcs, strings.ToLower(s.Name+"."+s.Namespace))
		n.mu.Unlock()
	}
}

// covers tells whether Names knows every Service of namespace ns.
func (n *Names) covers(ns string) bool {
	return n.synced.Load() && (n.all || ns == n.namespace)
}

// Exchange answers m from the copy, or returns ErrPass.
func (n *Names) Exchange(_ context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	if len(m.Question) != 1 || !n.synced.Load() {
		return nil, ErrPass
	}
	q := m.Question[0]
	if q.Qclass != mdns.ClassINET {
		return nil, ErrPass
	}
	name, port, proto, hostname, ns, ok := n.parse(q.Name)
	if !ok || !n.covers(ns) {
		return nil, ErrPass
	}
	n.mu.RLock()
	s := n.svcs[name+"."+ns]
	n.mu.RUnlock()
	r := new(mdns.Msg)
	r.SetReply(m)
	r.Authoritative = true
	switch {
	case s == nil:
		return r.SetRcode(m, mdns.RcodeNameError), nil
	case s.headless || s.external:
		return nil, ErrPass // its pods' names, or a CNAME: CoreDNS knows
	case hostname != "":
		return r.SetRcode(m, mdns.RcodeNameError), nil // only a headless Service's pods have one
	case port != "":
		if q.Qtype != mdns.TypeSRV && q.Qtype != mdns.TypeANY {
			return r, nil
		}
		target := name + "." + ns + ".svc." + n.domain + "."
		found := false
		for _, p := range s.ports {
			pr := string(p.Protocol)
			if pr == "" {
				pr = "TCP"
			}
			if p.Name == "" || !strings.EqualFold(p.Name, port) || !strings.EqualFold(pr, proto) {
				continue
			}
			found = true
			r.Answer = append(r.Answer, &mdns.SRV{Hdr: hdr(q.Name, mdns.TypeSRV), Priority: 0, Weight: 100, Port: uint16(p.Port), Target: target})
		}
		if !found {
			return r.SetRcode(m, mdns.RcodeNameError), nil
		}
		r.Extra = addresses(target, s.ips, mdns.TypeANY)
		return r, nil
	}
	r.Answer = addresses(q.Name, s.ips, q.Qtype)
	return r, nil
}

func hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: localTTL}
}

// addresses are the A (qtype A), AAAA (AAAA) or both (ANY) records of ips.
func addresses(name string, ips []netip.Addr, qtype uint16) []mdns.RR {
	var out []mdns.RR
	for _, ip := range ips {
		switch {
		case ip.Is4() && (qtype == mdns.TypeA || qtype == mdns.TypeANY):
			out = append(out, &mdns.A{Hdr: hdr(name, mdns.TypeA), A: ip.AsSlice()})
		case ip.Is6() && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY):
			out = append(out, &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA), AAAA: ip.AsSlice()})
		}
	}
	return out
}

// parse reads a Service name: NAME (the connected namespace), NAME.NS, NAME.NS.svc,
// NAME.NS.svc.DOMAIN, _PORT._PROTO.NAME.NS.svc.DOMAIN, and HOSTNAME.NAME.NS.svc.DOMAIN (a
// headless Service's pod, or a search-list expansion of NAME.NS). ok is false for any other
// name.
func (n *Names) parse(q string) (name, port, proto, hostname, ns string, ok bool) {
	l := strings.Split(strings.Trim(strings.ToLower(q), "."), ".")
	if d := strings.Split(n.domain, "."); len(l) > len(d)+1 && strings.Join(l[len(l)-len(d):], ".") == n.domain && l[len(l)-len(d)-1] == "svc" {
		l = l[:len(l)-len(d)-1] // NAME.NS.svc.DOMAIN and the forms under it
	} else if len(l) == 3 && l[2] == "svc" {
		l = l[:2]
	} else {
		switch len(l) {
		case 1:
			return l[0], "", "", "", n.namespace, true
		case 2: // the cluster source asks only when NS is a namespace (Classifier)
			return l[0], "", "", "", l[1], true
		}
		return "", "", "", "", "", false
	}
	switch {
	case len(l) == 2:
		return l[0], "", "", "", l[1], true
	case len(l) == 3 && strings.HasPrefix(l[0], "_"):
		return "", "", "", "", "", false // _PROTO.NAME.NS: not a form CoreDNS answers
	case len(l) == 3:
		return l[1], "", "", l[0], l[2], true
	case len(l) == 4 && strings.HasPrefix(l[0], "_") && strings.HasPrefix(l[1], "_"):
		return l[2], l[0][1:], l[1][1:], "", l[3], true
	}
	return "", "", "", "", "", false
}
