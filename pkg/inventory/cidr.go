package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// ServiceCIDRs returns the cluster's Service ranges: from the ServiceCIDR API where it is
// served (networking.k8s.io/v1, Kubernetes 1.33+), else from the API server's answer to a
// dry-run Service with an impossible ClusterIP, which names the valid range.
func ServiceCIDRs(ctx context.Context, client kubernetes.Interface, ns string) ([]netip.Prefix, error) {
	if list, err := client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{}); err == nil && len(list.Items) > 0 {
		var out []netip.Prefix
		for _, sc := range list.Items {
			for _, c := range sc.Spec.CIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	} else if err != nil {
		klog.FromContext(ctx).V(2).Info("ServiceCIDR API not usable; probing with a dry-run Service", "err", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kt-cidr-probe-"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "192.0.2.255", ClusterIPs: []string{"192.0.2.255"}, // TEST-NET-1: in no cluster's range
			Ports: []corev1.ServicePort{{Port: 80}},
		},
	}
	_, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil {
		return nil, fmt.Errorf("cannot find the Service range: the API server accepted a probe ClusterIP")
	}
	m := regexp.MustCompile(`valid IPs is ([0-9a-fA-F.:/]+)`).FindAllStringSubmatch(err.Error(), -1)
	var out []netip.Prefix
	for _, g := range m {
		if p, perr := netip.ParsePrefix(g[1]); perr == nil {
			out = append(out, p.Masked())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cannot find the Service range (%v); pass it with --include-ips", err)
	}
	return out, nil
}

// PodCIDRs returns the pod ranges: the nodes' podCIDRs when nodes can be listed, else the /16s
// of a sample of pod IPs (all namespaces when allowed, else ns).
func PodCIDRs(ctx context.Context, client kubernetes.Interface, ns string) ([]netip.Prefix, error) {
	seen := map[netip.Prefix]bool{}
	if nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			for _, c := range append(n.Spec.PodCIDRs, n.Spec.PodCIDR) {
				if p, err := netip.ParsePrefix(c); err == nil {
					seen[p.Masked()] = true
				}
			}
		}
	}
	if len(seen) == 0 {
		pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 2000})
		if err != nil {
			pods, err = client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 2000})
		}
		if err != nil {
			return nil, fmt.Errorf("cannot find pod ranges: %w; pass them with --include-ips or use --disable-pod-ip", err)
		}
		for _, p := range pods.Items {
			if p.Spec.HostNetwork {
				continue
			}
			for _, ip := range p.Status.PodIPs {
				a, err := netip.ParseAddr(ip.IP)
				if err != nil {
					continue
				}
				bits := 16
				if a.Is6() {
					bits = 64
				}
				pr, _ := a.Prefix(bits)
				seen[pr] = true
			}
		}
	}
	out := make([]netip.Prefix, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}
