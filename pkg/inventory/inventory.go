// Package inventory reads what kt needs to know about a cluster and changes nothing: its
// Service and pod ranges, the shadows and Services kt has there, and the stale ones to warn of.
package inventory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// ShadowInfo describes one kt pod.
type ShadowInfo struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Role      string    `json:"role"`
	Owner     string    `json:"owner"`
	Command   string    `json:"command,omitempty"`
	Phase     string    `json:"phase"`
	Heartbeat time.Time `json:"heartbeat"`
	// Paused: the shadow's client has missed its heartbeats for longer than the shadow's
	// --fallback-after, so the shadow sends its traffic to the original pods.
	Paused bool `json:"paused,omitempty"`
}

// Paused infers from the pod's heartbeat (which its client stamps every
// wire.PodHeartbeatInterval) whether its client has been away for longer than the shadow's
// --fallback-after: then the shadow sends its traffic to the original pods.
func Paused(p *corev1.Pod, now time.Time) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || len(p.Spec.Containers) == 0 {
		return false
	}
	c := p.Spec.Containers[0]
	fallback := false
	for _, e := range c.Env {
		fallback = fallback || e.Name == wire.EnvFallback && e.Value != ""
	}
	var after time.Duration
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--fallback-after="); ok {
			after, _ = time.ParseDuration(v)
		}
	}
	hb, err := time.Parse(time.RFC3339, p.Annotations[wire.HeartbeatAnnotation])
	return fallback && after > 0 && err == nil && now.Sub(hb) > after+wire.PodHeartbeatInterval
}

// Shadows lists kt's pods in ns ("" for all).
func Shadows(ctx context.Context, client kubernetes.Interface, ns string) ([]ShadowInfo, error) {
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if err != nil {
		return nil, cluster.Explain(err, "list", "pods", ns)
	}
	var out []ShadowInfo
	for _, p := range pods.Items {
		hb, _ := time.Parse(time.RFC3339, p.Annotations[wire.HeartbeatAnnotation])
		out = append(out, ShadowInfo{Namespace: p.Namespace, Pod: p.Name, Role: p.Labels[wire.RoleLabel], Owner: p.Annotations[wire.OwnerAnnotation],
			Command: p.Annotations[wire.CommandAnnotation], Phase: string(p.Status.Phase), Heartbeat: hb, Paused: Paused(&p, time.Now())})
	}
	return out, nil
}

// ServiceInfo says whether kt changed a Service, and who.
type ServiceInfo struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Status    string   `json:"status"` // normal, exchanged, meshed (auto), meshed (manual), previewing
	By        []string `json:"by,omitempty"`
	Marks     []string `json:"marks,omitempty"`
}

// Services describes every Service in ns.
func Services(ctx context.Context, client kubernetes.Interface, ns string) ([]ServiceInfo, error) {
	svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.Explain(err, "list", "services", ns)
	}
	meshPods, _ := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleMesh})
	exchangePods, _ := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleExchange})
	var out []ServiceInfo
	for _, s := range svcs.Items {
		if s.Labels[wire.RoleLabel] == "origin" {
			continue // a mesh's helper
		}
		si := ServiceInfo{Namespace: s.Namespace, Name: s.Name, Status: "normal"}
		switch {
		case s.Labels[wire.RoleLabel] == wire.RolePreview:
			si.Status, si.By = "previewing", []string{s.Annotations[wire.OwnerAnnotation]}
		default:
			if m, ok := wire.GetMesh(&s); ok {
				si.Status = "meshed (auto)"
				for _, mm := range m.Live(cluster.StaleAfter) {
					si.By = append(si.By, mm.Owner)
					mark := mm.Key + ": " + mm.Value
					if mm.Mirror {
						mark = MirrorMark(mm)
					}
					if !mm.Mirror && meshPods != nil && slices.ContainsFunc(meshPods.Items, func(p corev1.Pod) bool { return p.Status.PodIP == mm.Shadow && Paused(&p, time.Now()) }) {
						mark += " (paused: to the original pods)"
					}
					si.Marks = append(si.Marks, mark)
				}
			} else if l, ok := wire.ServiceLock(&s); ok {
				si.Status, si.By = "exchanged", []string{l.Owner}
				if exchangePods != nil && slices.ContainsFunc(exchangePods.Items, func(p corev1.Pod) bool {
					return p.Namespace == s.Namespace && p.Labels[wire.ExchangeLabel] == l.Session && Paused(&p, time.Now())
				}) {
					si.Status = "exchanged (paused: to the original pods)"
				}
			} else if meshPods != nil && len(s.Spec.Selector) > 0 {
				sel := labels.SelectorFromSet(s.Spec.Selector)
				for _, p := range meshPods.Items {
					if sel.Matches(labels.Set(p.Labels)) {
						si.Status = "meshed (manual)"
						si.By = append(si.By, p.Annotations[wire.OwnerAnnotation])
					}
				}
			}
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name })
	return out, nil
}

// Mine reports whether owner (user@host) is this user on this machine.
func Mine(owner string) bool { return strings.EqualFold(owner, wire.Owner()) }

// MirrorMark describes a mirror member for status: what it copies, and its counts.
func MirrorMark(mm wire.MeshMember) string {
	what := "mirror of every request"
	if mm.Key != "" {
		what = "mirror of '" + mm.Key + ": " + mm.Value + "'"
	}
	if mm.PathPrefix != "" {
		what += " under " + mm.PathPrefix
	}
	return fmt.Sprintf("%s (copies: %d sent, %d dropped)", what, mm.Sent, mm.Dropped)
}
