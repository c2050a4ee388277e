package connect

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// hostsWriter keeps kt's block in the hosts file equal to the Services of some namespaces:
// svc.ns and svc.ns.svc.<domain> for each, the bare svc for the current namespace, and the
// pods of headless Services by their hostnames (StatefulSet pods). It watches Services and
// EndpointSlices (one watch of each for every namespace when it may, else one per namespace),
// computes the whole block in memory from what the watches hold, and writes it once per burst
// of changes.
type hostsWriter struct {
	client     kubernetes.Interface
	admin      netadmin.Admin
	path       string
	namespaces []string
	current    string
	domain     string

	svcs, slices []cache.Store
	changed      chan struct{}
	written      string // the last block written, to skip an unchanged one
	mu           sync.Mutex
}

// hostsDebounce is how long the writer waits after a change for more of a burst, and
// hostsMaxWait how long at most, under a stream of changes.
const (
	hostsDebounce = 100 * time.Millisecond
	hostsMaxWait  = time.Second
)

// start starts the watches and writes the first block once they have synced.
func (h *hostsWriter) start(ctx context.Context) error {
	h.changed = make(chan struct{}, 1)
	scopes := []string{metav1.NamespaceAll}
	if len(h.namespaces) == 1 || h.mayList(ctx, metav1.NamespaceAll) != nil {
		scopes = h.namespaces
		for _, ns := range scopes { // a refusal now, not after the watches' 30 s
			if err := h.mayList(ctx, ns); err != nil {
				return err
			}
		}
	}
	var synced []cache.InformerSynced
	notify := func() {
		select {
		case h.changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { notify() }, UpdateFunc: func(_, _ any) { notify() }, DeleteFunc: func(any) { notify() }}
	quiet := klog.NewContext(ctx, klog.FromContext(ctx).V(3)) // a watch cut by the network: for -v 3
	for _, ns := range scopes {
		svcs, sc := cache.NewInformerWithOptions(cache.InformerOptions{
			ListerWatcher: &cache.ListWatch{
				ListFunc: func(o metav1.ListOptions) (runtime.Object, error) { return h.client.CoreV1().Services(ns).List(ctx, o) },
				WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
					return h.client.CoreV1().Services(ns).Watch(ctx, o)
				},
			},
			ObjectType: &corev1.Service{}, Handler: handler,
			Transform: func(o any) (any, error) {
				if s, ok := o.(*corev1.Service); ok {
					return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion},
						Spec: corev1.ServiceSpec{ClusterIP: s.Spec.ClusterIP}}, nil
				}
				return o, nil
			},
		})
		slices, ec := cache.NewInformerWithOptions(cache.InformerOptions{
			ListerWatcher: &cache.ListWatch{
				ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
					return h.client.DiscoveryV1().EndpointSlices(ns).List(ctx, o)
				},
				WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
					return h.client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, o)
				},
			},
			ObjectType: &discoveryv1.EndpointSlice{}, Handler: handler,
		})
		h.svcs, h.slices = append(h.svcs, svcs), append(h.slices, slices)
		go sc.RunWithContext(quiet)
		go ec.RunWithContext(quiet)
		synced = append(synced, sc.HasSynced, ec.HasSynced)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(wctx.Done(), synced...) {
		return fmt.Errorf("watch Services and EndpointSlices in %v: not listed within 30 s", h.namespaces)
	}
	return h.write(ctx)
}

// mayList tells whether Services and EndpointSlices may be listed in ns (every namespace: "").
func (h *hostsWriter) mayList(ctx context.Context, ns string) error {
	one := metav1.ListOptions{Limit: 1}
	_, err := h.client.CoreV1().Services(ns).List(ctx, one)
	if err == nil {
		_, err = h.client.DiscoveryV1().EndpointSlices(ns).List(ctx, one)
	}
	return err
}

// entries computes the block from what the watches hold.
func (h *hostsWriter) entries() []dns.HostEntry {
	want := map[string]bool{}
	for _, ns := range h.namespaces {
		want[ns] = true
	}
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, st := range h.slices {
		for _, o := range st.List() {
			if sl, ok := o.(*discoveryv1.EndpointSlice); ok && want[sl.Namespace] {
				k := sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName]
				bySvc[k] = append(bySvc[k], sl)
			}
		}
	}
	names := map[string][]string{}
	add := func(ip string, n ...string) { names[ip] = append(names[ip], n...) }
	for _, st := range h.svcs {
		for _, o := range st.List() {
			s, ok := o.(*corev1.Service)
			if !ok || !want[s.Namespace] {
				continue
			}
			ns := s.Namespace
			short := []string{s.Name + "." + ns, s.Name + "." + ns + ".svc." + h.domain}
			if ns == h.current {
				short = append([]string{s.Name}, short...)
			}
			if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
				add(s.Spec.ClusterIP, short...)
				continue
			}
			slices := bySvc[ns+"/"+s.Name]
			sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
			first := true
			for _, sl := range slices {
				for _, ep := range sl.Endpoints {
					if len(ep.Addresses) == 0 {
						continue
					}
					if first { // the Service name answers with one of its pods
						add(ep.Addresses[0], short...)
						first = false
					}
					if ep.Hostname != nil {
						pod := *ep.Hostname + "." + s.Name
						hn := []string{pod + "." + ns, pod + "." + ns + ".svc." + h.domain}
						if ns == h.current {
							hn = append([]string{pod}, hn...)
						}
						add(ep.Addresses[0], hn...)
					}
				}
			}
		}
	}
	out := make([]dns.HostEntry, 0, len(names))
	for ip, n := range names {
		sort.Strings(n)
		out = append(out, dns.HostEntry{IP: ip, Names: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Names[0] < out[j].Names[0] })
	return out
}

// write writes the block when it differs from the last one written.
func (h *hostsWriter) write(ctx context.Context) error {
	e := h.entries()
	key := fmt.Sprint(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == h.written {
		return nil
	}
	if err := h.admin.WriteHostsBlock(h.path, e); err != nil {
		return err
	}
	h.written = key
	klog.FromContext(ctx).V(2).Info("hosts block written", "entries", len(e))
	return nil
}

// run writes the block after each burst of changes: hostsDebounce after the last change,
// or hostsMaxWait after the first one under a stream of them.
func (h *hostsWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.changed:
		}
		deadline := time.After(hostsMaxWait)
	burst:
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.changed:
				continue
			case <-time.After(hostsDebounce):
			case <-deadline:
			}
			break burst
		}
		if err := h.write(ctx); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).V(1).Info("update hosts", "err", err)
		}
	}
}
