package connect

import (
	"context"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// hostsWriter keeps kt's block in the hosts file equal to the Services of some namespaces:
// svc.ns and svc.ns.svc.<domain> for each, the bare svc for the current namespace, and the
// pods of headless Services by their hostnames (StatefulSet pods).
type hostsWriter struct {
	client     kubernetes.Interface
	admin      netadmin.Admin
	path       string
	namespaces []string
	current    string
	domain     string
}

func (h *hostsWriter) entries(ctx context.Context) ([]dns.HostEntry, error) {
	names := map[string][]string{}
	add := func(ip string, n ...string) { names[ip] = append(names[ip], n...) }
	for _, ns := range h.namespaces {
		svcs, err := h.client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, s := range svcs.Items {
			full := s.Name + "." + ns + ".svc." + h.domain
			short := []string{s.Name + "." + ns, full}
			if ns == h.current {
				short = append([]string{s.Name}, short...)
			}
			if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
				add(s.Spec.ClusterIP, short...)
				continue
			}
			slices, err := h.client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
			if err != nil {
				continue
			}
			first := true
			for _, sl := range slices.Items {
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
	var out []dns.HostEntry
	for ip, n := range names {
		sort.Strings(n)
		out = append(out, dns.HostEntry{IP: ip, Names: n})
	}
	return out, nil
}

func (h *hostsWriter) sync(ctx context.Context) error {
	e, err := h.entries(ctx)
	if err != nil {
		return err
	}
	return h.admin.WriteHostsBlock(h.path, e)
}

// run resyncs whenever a Service or EndpointSlice in the namespaces changes.
func (h *hostsWriter) run(ctx context.Context) {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for _, ns := range h.namespaces {
		go h.watch(ctx, ns, notify)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		time.Sleep(200 * time.Millisecond) // coalesce a burst of events
		if err := h.sync(ctx); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).V(1).Info("update hosts", "err", err)
		}
	}
}

func (h *hostsWriter) watch(ctx context.Context, ns string, notify func()) {
	for ctx.Err() == nil {
		sw, err := h.client.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(2 * time.Second)
			continue
		}
		ew, err := h.client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			sw.Stop()
			time.Sleep(2 * time.Second)
			continue
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case _, ok := <-sw.ResultChan():
				if !ok {
					break loop
				}
				notify()
			case _, ok := <-ew.ResultChan():
				if !ok {
					break loop
				}
				notify()
			}
		}
		sw.Stop()
		ew.Stop()
		notify()
	}
}
