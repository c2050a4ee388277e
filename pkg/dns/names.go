package dns

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ErrPass is a source's way to say that a name is not its to answer: the next source is
// asked, and nothing is logged.
var ErrPass = errors.New("not this source's name")

// localTTL is the TTL of the records Names answers, CoreDNS's default.
const localTTL = 5

// Names is a local copy of the cluster's Service names, kept current by watches of Services
// and of headless Services' EndpointSlices, so that a lookup costs no round trip to the
// cluster. It answers A, AAAA and SRV for Services with cluster IPs, for headless Services
// (their ready pods) and their pods by hostname (a StatefulSet's web-0.web) or by dashed IP,
// and NXDOMAIN for a name that does not exist in a namespace it watches, including the names
// glibc makes by appending the search list. What it cannot know it passes on (ErrPass):
// ExternalName Services, a headless Service with no ready pod, pod names under pod.DOMAIN,
// namespaces it does not watch, and headless Services where EndpointSlices may not be watched.
// The same copy writes the hosts file's block in --dns-mode hosts (Hosts, OnChange).
type Names struct {
	domain  string
	current string          // the namespace of a bare NAME
	served  map[string]bool // the namespaces whose names are kept; nil: every namespace

	// OnChange, when set before Run, is called after every change to the copy.
	OnChange func()

	mu       sync.RWMutex
	svcs     map[string]*service          // by "name.namespace"
	slices   map[string]map[string]*slice // a headless Service's EndpointSlices: by "name.namespace", then by the slice's name
	synced   atomic.Bool
	slicesOK atomic.Bool   // headless Services' EndpointSlices are watched
	ready    chan struct{} // closed once synced, or when Run gives up
	once     sync.Once
}

// service is what Names keeps of a Service: nothing else of it stays in memory.
type service struct {
	ips      []netip.Addr
	ports    []port // its named ports
	headless bool
	external bool
}

// port is a named port: its name and protocol in lower case.
type port struct {
	name, proto string
	port        uint16
}

// slice is what Names keeps of an EndpointSlice of a headless Service: its ready endpoints.
type slice struct{ eps []endpoint }

type endpoint struct {
	ips      []netip.Addr
	hostname string
	ports    []port // its slice's named ports
}

// Watch says which names Names keeps.
type Watch struct {
	// Current is the namespace of a bare NAME.
	Current string
	// Namespaces are the namespaces whose names are kept. With none, every namespace's,
	// where the client may watch them all, else Current's.
	Namespaces []string
	// NeedSlices makes Run fail where EndpointSlices may not be watched, instead of passing
	// headless Services on.
	NeedSlices bool
}

// NewNames returns an empty Names for the cluster domain; Run fills it.
func NewNames(domain string) *Names {
	return &Names{domain: strings.Trim(strings.ToLower(domain), "."), svcs: map[string]*service{},
		slices: map[string]map[string]*slice{}, ready: make(chan struct{})}
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

// Run starts the watches and returns once they have listed and are watching, or with the
// error that refused them; they run until ctx ends. It watches every namespace at once when
// the client may, else each namespace of w apart (a refusal there is Run's error, and Names
// then passes every name on).
func (n *Names) Run(ctx context.Context, client kubernetes.Interface, w Watch) error {
	defer n.markReady()
	n.current = w.Current
	each := w.Namespaces
	if len(each) == 0 {
		each = []string{w.Current}
	} else {
		n.served = map[string]bool{}
		for _, ns := range each {
			n.served[ns] = true
		}
	}
	if len(w.Namespaces) != 1 {
		err := n.watch(ctx, client, []string{metav1.NamespaceAll}, w.NeedSlices)
		if err == nil || !apierrors.IsForbidden(err) {
			return err
		}
		if n.served == nil {
			n.mu.Lock() // the refused watches' handlers may still be running
			n.served = map[string]bool{w.Current: true}
			n.mu.Unlock()
		}
	}
	return n.watch(ctx, client, each, w.NeedSlices)
}

// watched is one informer's progress: listed, watching, or refused.
type watched struct {
	synced  cache.InformerSynced
	opened  chan struct{} // closed when its first watch is open
	open    sync.Once
	refused chan error // its first list's or watch's refusal
}

func (w *watched) note(err error) {
	if err == nil {
		w.open.Do(func() { close(w.opened) })
	} else if apierrors.IsForbidden(err) {
		select {
		case w.refused <- err:
		default:
		}
	}
}

// refusal is the refusal that came, if one did.
func (w *watched) refusal() error {
	select {
	case err := <-w.refused:
		return err
	default:
		return nil
	}
}

func (w *watched) running() bool {
	select {
	case <-w.opened:
		return w.synced()
	default:
		return false
	}
}

// inform starts an informer of lw's objects that keeps Names current through set and
// remove, which it calls with n.mu held, and only until ctx ends: a stopped watch's last
// events change nothing. Its list's refusal, or its first watch's, comes out of refused: no
// probe of its own costs round trips first.
func (n *Names) inform(ctx context.Context, lw *cache.ListWatch, obj runtime.Object, transform cache.TransformFunc, set, remove func(any)) *watched {
	w := &watched{opened: make(chan struct{}), refused: make(chan error, 1)}
	list, watchFn := lw.ListFunc, lw.WatchFunc
	lw.ListFunc = func(o metav1.ListOptions) (runtime.Object, error) {
		l, err := list(o)
		if err != nil {
			w.note(err)
		}
		return l, err
	}
	lw.WatchFunc = func(o metav1.ListOptions) (watch.Interface, error) {
		wi, err := watchFn(o)
		w.note(err)
		return wi, err
	}
	apply := func(f func(any), o any) {
		n.mu.Lock()
		live := ctx.Err() == nil
		if live {
			f(o)
		}
		n.mu.Unlock()
		if live && n.OnChange != nil {
			n.OnChange()
		}
	}
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: obj, Transform: transform,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { apply(set, o) },
			UpdateFunc: func(_, o any) { apply(set, o) },
			DeleteFunc: func(o any) { apply(remove, o) },
		},
	})
	w.synced = informer.HasSynced
	go informer.RunWithContext(quiet(ctx))
	return w
}

// watch watches Services and headless Services' EndpointSlices in scopes until ctx ends, and
// returns once all are listed and watching. A refusal of Services, or of EndpointSlices
// with needSlices, stops them all and is returned; of EndpointSlices alone, stops those.
func (n *Names) watch(ctx context.Context, client kubernetes.Interface, scopes []string, needSlices bool) error {
	wctx, cancel := context.WithCancel(ctx)
	sctx, scancel := context.WithCancel(wctx) // ended with wctx, or alone on a refusal
	var svcs, slices []*watched
	for _, ns := range scopes {
		svcs = append(svcs, n.inform(wctx, &cache.ListWatch{
			ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
				return client.CoreV1().Services(ns).List(ctx, o)
			},
			WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
				return client.CoreV1().Services(ns).Watch(ctx, o)
			},
		}, &corev1.Service{}, serviceFields, n.set, n.remove))
		headless := func(o metav1.ListOptions) metav1.ListOptions { o.LabelSelector = corev1.IsHeadlessService; return o }
		slices = append(slices, n.inform(sctx, &cache.ListWatch{
			ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
				return client.DiscoveryV1().EndpointSlices(ns).List(ctx, headless(o))
			},
			WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
				return client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, headless(o))
			},
		}, &discoveryv1.EndpointSlice{}, sliceFields, n.setSlice, n.removeSlice))
	}
	stop := func() { scancel(); cancel() }
	fail := func(err error) error { // then forget what they had put in the copy
		stop()
		n.mu.Lock()
		n.svcs, n.slices = map[string]*service{}, map[string]map[string]*slice{}
		n.mu.Unlock()
		return err
	}
	n.slicesOK.Store(true)
	for { // polled finely: connect waits for it
		all := true
		for _, w := range svcs {
			if err := w.refusal(); err != nil {
				return fail(err)
			}
			all = all && w.running()
		}
		for _, w := range slices {
			if err := w.refusal(); err != nil {
				if needSlices {
					return fail(err)
				}
				scancel() // headless Services go to the cluster
				n.slicesOK.Store(false)
				slices = nil
				break
			}
			all = all && w.running()
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	context.AfterFunc(ctx, stop) // the watches end with ctx
	if !n.slicesOK.Load() {
		n.mu.Lock()
		n.slices = map[string]map[string]*slice{}
		n.mu.Unlock()
	}
	n.synced.Store(true)
	return nil
}

// kept is what the informers store of an object, made as it arrives: its name, and what
// Names keeps of it, shared with Names' maps. 10000 Services hold a few MiB.
type kept struct {
	metav1.TypeMeta
	metav1.ObjectMeta // name, namespace and resource version only

	svc   *service // a Service's
	slice *slice   // an EndpointSlice's (of a headless Service), or nil
	owner string   // an EndpointSlice's Service
}

func (k *kept) DeepCopyObject() runtime.Object { c := *k; return &c }

func keptMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion}
}

// serviceFields keeps only what a name needs of a Service.
func serviceFields(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	e := &service{headless: s.Spec.ClusterIP == corev1.ClusterIPNone, external: s.Spec.Type == corev1.ServiceTypeExternalName}
	for _, p := range s.Spec.Ports {
		if p.Name != "" { // only named ports have SRV records
			e.ports = append(e.ports, port{name: strings.ToLower(p.Name), proto: protocol(string(p.Protocol)), port: uint16(p.Port)})
		}
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			e.ips = append(e.ips, a)
		}
	}
	return &kept{ObjectMeta: keptMeta(s.ObjectMeta), svc: e}, nil
}

// sliceFields keeps only what a name needs of an EndpointSlice: a headless Service's ready
// endpoints (as CoreDNS: publishNotReadyAddresses makes them ready), by address and hostname.
func sliceFields(o any) (any, error) {
	sl, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	k := &kept{ObjectMeta: keptMeta(sl.ObjectMeta), owner: sl.Labels[discoveryv1.LabelServiceName]}
	if _, headless := sl.Labels[corev1.IsHeadlessService]; !headless || k.owner == "" {
		return k, nil
	}
	var ports []port
	for _, p := range sl.Ports {
		if p.Name != nil && *p.Name != "" && p.Port != nil {
			pr := ""
			if p.Protocol != nil {
				pr = string(*p.Protocol)
			}
			ports = append(ports, port{name: strings.ToLower(*p.Name), proto: protocol(pr), port: uint16(*p.Port)})
		}
	}
	k.slice = &slice{}
	for _, ep := range sl.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		x := endpoint{ports: ports}
		for _, ip := range ep.Addresses {
			if a, err := netip.ParseAddr(ip); err == nil {
				x.ips = append(x.ips, a)
			}
		}
		if ep.Hostname != nil {
			x.hostname = strings.ToLower(*ep.Hostname)
		}
		if len(x.ips) > 0 {
			k.slice.eps = append(k.slice.eps, x)
		}
	}
	return k, nil
}

// protocol is a port's protocol in lower case, TCP where none is given.
func protocol(p string) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(p)
}

func (n *Names) keeps(ns string) bool { return n.served == nil || n.served[ns] }

func stored(o any) *kept {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	k, _ := o.(*kept)
	return k
}

// set, remove, setSlice and removeSlice change the copy, with n.mu held (inform).
func (n *Names) set(o any) {
	if k := stored(o); k != nil && k.svc != nil && n.keeps(k.Namespace) {
		n.svcs[strings.ToLower(k.Name+"."+k.Namespace)] = k.svc
	}
}

func (n *Names) remove(o any) {
	if k := stored(o); k != nil {
		delete(n.svcs, strings.ToLower(k.Name+"."+k.Namespace))
	}
}

func (n *Names) setSlice(o any) {
	k := stored(o)
	if k == nil || k.slice == nil || !n.keeps(k.Namespace) {
		return
	}
	key := strings.ToLower(k.owner + "." + k.Namespace)
	if n.slices[key] == nil {
		n.slices[key] = map[string]*slice{}
	}
	n.slices[key][k.Name] = k.slice
}

func (n *Names) removeSlice(o any) {
	k := stored(o)
	if k == nil {
		return
	}
	key := strings.ToLower(k.owner + "." + k.Namespace)
	if m := n.slices[key]; m != nil {
		delete(m, k.Name)
		if len(m) == 0 {
			delete(n.slices, key)
		}
	}
}

// pods are the ready endpoints of a headless Service ("name.namespace"), in the slices'
// order, each address once.
func (n *Names) pods(key string) []endpoint {
	n.mu.RLock()
	defer n.mu.RUnlock()
	m := n.slices[key]
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []endpoint
	seen := map[netip.Addr]bool{}
	for _, name := range names {
		for _, ep := range m[name].eps {
			if !seen[ep.ips[0]] {
				seen[ep.ips[0]] = true
				out = append(out, ep)
			}
		}
	}
	return out
}

// label is an endpoint's name under its Service: its hostname, else its address with
// dashes, as CoreDNS names it.
func (e endpoint) label() string {
	if e.hostname != "" {
		return e.hostname
	}
	return dashes.Replace(e.ips[0].String())
}

var dashes = strings.NewReplacer(".", "-", ":", "-")

// covers tells whether Names knows every Service of namespace ns.
func (n *Names) covers(ns string) bool {
	return n.synced.Load() && n.keeps(ns)
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
	case s.external:
		return nil, ErrPass // a CNAME: CoreDNS knows
	case s.headless:
		return n.headless(r, m, name, port, proto, hostname, ns)
	case hostname != "":
		return r.SetRcode(m, mdns.RcodeNameError), nil // only a headless Service's pods have one
	case port != "":
		if q.Qtype != mdns.TypeSRV && q.Qtype != mdns.TypeANY {
			return r, nil
		}
		target := name + "." + ns + ".svc." + n.domain + "."
		found := false
		for _, p := range s.ports {
			if p.name != port || p.proto != proto {
				continue
			}
			found = true
			r.Answer = append(r.Answer, &mdns.SRV{Hdr: hdr(q.Name, mdns.TypeSRV), Priority: 0, Weight: 100, Port: p.port, Target: target})
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

// headless answers for a headless Service's pods, or passes on where Names does not know them.
func (n *Names) headless(r, m *mdns.Msg, name, port, proto, hostname, ns string) (*mdns.Msg, error) {
	if !n.slicesOK.Load() {
		return nil, ErrPass
	}
	pods := n.pods(name + "." + ns)
	if len(pods) == 0 {
		return nil, ErrPass // none ready, or none seen yet: CoreDNS says
	}
	q := m.Question[0]
	base := name + "." + ns + ".svc." + n.domain + "."
	switch {
	case hostname != "":
		found := false
		for _, p := range pods { // a dual-stack pod is in two slices
			if p.label() == hostname {
				found = true
				r.Answer = append(r.Answer, addresses(q.Name, p.ips, q.Qtype)...)
			}
		}
		if !found {
			return r.SetRcode(m, mdns.RcodeNameError), nil
		}
		return r, nil
	case port != "":
		if q.Qtype != mdns.TypeSRV && q.Qtype != mdns.TypeANY {
			return r, nil
		}
		for _, p := range pods {
			target := p.label() + "." + base
			for _, pt := range p.ports {
				if pt.name != port || pt.proto != proto {
					continue
				}
				r.Answer = append(r.Answer, &mdns.SRV{Hdr: hdr(q.Name, mdns.TypeSRV), Port: pt.port, Target: target})
				r.Extra = append(r.Extra, addresses(target, p.ips, mdns.TypeANY)...)
			}
		}
		if len(r.Answer) == 0 {
			return r.SetRcode(m, mdns.RcodeNameError), nil
		}
		for _, rr := range r.Answer { // CoreDNS's weights: an equal share of 100
			rr.(*mdns.SRV).Weight = uint16(100 / len(r.Answer))
		}
		return r, nil
	}
	for _, p := range pods {
		r.Answer = append(r.Answer, addresses(q.Name, p.ips, q.Qtype)...)
	}
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
			return l[0], "", "", "", n.current, true
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

// Hosts are the hosts-file lines of the copy: NAME.NS and NAME.NS.svc.DOMAIN of each Service
// at its cluster IP, and the bare NAME in the current namespace; a headless Service's names at
// one of its ready pods, and its pods by hostname (a StatefulSet's web-0.web.NS). One line per
// address, in the order of the first name.
func (n *Names) Hosts() []HostEntry {
	n.mu.RLock()
	keys := make([]string, 0, len(n.svcs))
	for k := range n.svcs {
		keys = append(keys, k)
	}
	n.mu.RUnlock()
	sort.Strings(keys)
	byIP := map[netip.Addr][]string{}
	add := func(ip netip.Addr, names ...string) { byIP[ip] = append(byIP[ip], names...) }
	forms := func(name, ns string) []string {
		f := []string{name + "." + ns, name + "." + ns + ".svc." + n.domain}
		if ns == n.current {
			f = append([]string{name}, f...)
		}
		return f
	}
	for _, k := range keys {
		name, ns, _ := strings.Cut(k, ".")
		n.mu.RLock()
		s := n.svcs[k]
		n.mu.RUnlock()
		switch {
		case s == nil || s.external:
		case !s.headless:
			if len(s.ips) > 0 {
				add(s.ips[0], forms(name, ns)...)
			}
		default:
			for i, p := range n.pods(k) {
				if i == 0 { // the Service's name answers with one of its pods
					add(p.ips[0], forms(name, ns)...)
				}
				if p.hostname != "" {
					add(p.ips[0], forms(p.hostname+"."+name, ns)...)
				}
			}
		}
	}
	out := make([]HostEntry, 0, len(byIP))
	for ip, names := range byIP {
		sort.Strings(names)
		out = append(out, HostEntry{IP: ip.String(), Names: names})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Names[0] < out[j].Names[0] })
	return out
}
