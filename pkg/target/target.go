// Package target resolves what a command works on: a Service, the workload behind it and its
// pods' containers, and the ports of --expose mapped onto the Service's. It only reads the
// cluster.
package target

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// Workload is a Deployment or StatefulSet behind a Service.
type Workload struct {
	Kind, Name string
	Replicas   int32
	Labels     map[string]string // pod template labels
	Selector   *metav1.LabelSelector
	Containers []corev1.Container
	// Undo is scale mode's record on the workload (wire.UndoAnnotation), if it holds one: a
	// session scaled it to zero and has not scaled it back yet.
	Undo *WorkloadUndo
}

// Target is what a command acts on.
type Target struct {
	Service  *corev1.Service
	Workload *Workload // nil when none could be found
}

// ErrNotFound is in the error of a target that does not exist (kubectl kt run makes it a
// usage error).
var ErrNotFound = errors.New("not found")

// Resolve finds the Service (and its workload) for svc/NAME, deploy/NAME, sts/NAME or NAME.

func Resolve(ctx context.Context, client kubernetes.Interface, ns, ref string) (*Target, error) {
	kind, name, ok := ParseRef(ref)
	if !ok || kind == KindPod {
		return nil, fmt.Errorf("%q: write svc/NAME, deploy/NAME, sts/NAME or a Service NAME", ref)
	}
	switch kind {
	case KindService:
		svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("service %s/%s %w; check the name and -n/--namespace", ns, name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			return nil, fmt.Errorf("service %s/%s is an ExternalName Service (a DNS name for %q): no pods of the cluster serve it; give a Service that selects pods", ns, name, svc.Spec.ExternalName)
		}
		if len(svc.Spec.Selector) == 0 {
			return nil, fmt.Errorf("service %s/%s has no selector (its endpoints are managed by hand): kt can only take the traffic of a Service that selects pods", ns, name)
		}
		sel := svc.Spec.Selector
		if s, ok := svc.Annotations[wire.UndoAnnotation]; ok { // changed by kt: find the real workload
			var u wire.ServiceUndo
			if json.Unmarshal([]byte(s), &u) == nil && len(u.Selector) > 0 {
				sel = u.Selector
			}
		}
		w, err := workloadFor(ctx, client, ns, sel)
		if err != nil {
			return nil, err
		}
		return &Target{Service: svc, Workload: w}, nil
	default:
		w, err := GetWorkload(ctx, client, ns, kind, name)
		if err != nil {
			return nil, err
		}
		svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var match []corev1.Service
		for _, s := range svcs.Items {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.Labels)) {
				match = append(match, s)
			}
		}
		switch len(match) {
		case 0:
			return nil, fmt.Errorf("no Service in %s selects %s/%s; create one, or exchange a Service", ns, kind, name)
		case 1:
			return &Target{Service: &match[0], Workload: w}, nil
		}
		var names []string
		for _, s := range match {
			names = append(names, "svc/"+s.Name)
		}
		return nil, fmt.Errorf("several Services select %s/%s (%s); name one", kind, name, strings.Join(names, ", "))
	}
}

// GetWorkload reads the Deployment (KindDeployment) or else the StatefulSet ns/name.
func GetWorkload(ctx context.Context, client kubernetes.Interface, ns string, kind Kind, name string) (*Workload, error) {
	if kind == KindDeployment {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("deployment %s/%s %w; check the name and -n/--namespace", ns, name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		return fromDeployment(d), nil
	}
	s, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("statefulset %s/%s %w; check the name and -n/--namespace", ns, name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return fromStatefulSet(s), nil
}

func fromDeployment(d *appsv1.Deployment) *Workload {
	r := int32(1)
	if d.Spec.Replicas != nil {
		r = *d.Spec.Replicas
	}
	return &Workload{Kind: "Deployment", Name: d.Name, Replicas: r, Labels: d.Spec.Template.Labels, Selector: d.Spec.Selector, Containers: d.Spec.Template.Spec.Containers, Undo: workloadUndo(d.Annotations)}
}

func fromStatefulSet(s *appsv1.StatefulSet) *Workload {
	r := int32(1)
	if s.Spec.Replicas != nil {
		r = *s.Spec.Replicas
	}
	return &Workload{Kind: "StatefulSet", Name: s.Name, Replicas: r, Labels: s.Spec.Template.Labels, Selector: s.Spec.Selector, Containers: s.Spec.Template.Spec.Containers, Undo: workloadUndo(s.Annotations)}
}

// workloadUndo reads scale mode's record from a workload's annotations.
func workloadUndo(ann map[string]string) *WorkloadUndo {
	s, ok := ann[wire.UndoAnnotation]
	if !ok {
		return nil
	}
	var u WorkloadUndo
	if json.Unmarshal([]byte(s), &u) != nil {
		return nil
	}
	return &u
}

// ServiceWorkload finds the workload behind a Service: the one Deployment or StatefulSet its
// selector (its original one, while kt has redirected it) selects; nil if there is none.
func ServiceWorkload(ctx context.Context, client kubernetes.Interface, svc *corev1.Service) (*Workload, error) {
	sel := originalSelector(svc)
	if len(sel) == 0 {
		return nil, nil
	}
	return workloadFor(ctx, client, svc.Namespace, sel)
}

// originalSelector is svc's selector, or the one kt keeps while it has redirected the Service.
func originalSelector(svc *corev1.Service) map[string]string {
	if s, ok := svc.Annotations[wire.UndoAnnotation]; ok {
		var u wire.ServiceUndo
		if json.Unmarshal([]byte(s), &u) == nil {
			return u.Selector
		}
	}
	return svc.Spec.Selector
}

// ReadyPods counts the ready pods that svc's selector selects (its original one, while kt has
// redirected it): those that answer its requests.
func ReadyPods(ctx context.Context, client kubernetes.Interface, svc *corev1.Service) (int, error) {
	sel := originalSelector(svc)
	if len(sel) == 0 {
		return 0, nil
	}
	pods, err := client.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pods.Items {
		// not kt's own (a shadow with the workload's labels)
		if p.DeletionTimestamp == nil && p.Labels[wire.RoleLabel] == "" && podutils.IsPodReady(&p) {
			n++
		}
	}
	return n, nil
}

// workloadFor finds the one Deployment or StatefulSet whose pods sel selects (nil if none).
func workloadFor(ctx context.Context, client kubernetes.Interface, ns string, sel map[string]string) (*Workload, error) {
	s := labels.SelectorFromSet(sel)
	var found []*Workload
	if ds, err := client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for i := range ds.Items {
			if s.Matches(labels.Set(ds.Items[i].Spec.Template.Labels)) {
				found = append(found, fromDeployment(&ds.Items[i]))
			}
		}
	}
	if ss, err := client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for i := range ss.Items {
			if s.Matches(labels.Set(ss.Items[i].Spec.Template.Labels)) {
				found = append(found, fromStatefulSet(&ss.Items[i]))
			}
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return nil, nil
}

// Expose is one --expose item: LOCAL:REMOTE, or PORT for both.
type Expose struct {
	Local  int
	Remote string // a port number or a port name
}

// ParseExpose parses --expose.
func ParseExpose(s string) ([]Expose, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--expose is required: LOCAL:REMOTE[,LOCAL:REMOTE…], e.g. 8080:80 or 8080")
	}
	var out []Expose
	seen := map[int]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		parts := strings.Split(item, ":")
		if len(parts) > 2 || item == "" {
			return nil, fmt.Errorf("--expose %q: %q is not LOCAL:REMOTE or PORT (e.g. 8080:80, 8080:http or 8080)", s, item)
		}
		local, err := strconv.Atoi(parts[0])
		if err != nil || local < 1 || local > 65535 {
			return nil, fmt.Errorf("--expose %q: local port %q is not a number from 1 to 65535", s, parts[0])
		}
		remote := parts[0]
		if len(parts) == 2 {
			remote = parts[1]
			if n, err := strconv.Atoi(remote); err == nil && (n < 1 || n > 65535) {
				return nil, fmt.Errorf("--expose %q: remote port %d is not from 1 to 65535", s, n)
			}
			if remote == "" {
				return nil, fmt.Errorf("--expose %q: empty remote port in %q", s, item)
			}
		}
		if seen[local] && len(parts) == 1 {
			return nil, fmt.Errorf("--expose %q: port %d is listed twice", s, local)
		}
		seen[local] = true
		out = append(out, Expose{Local: local, Remote: remote})
	}
	return out, nil
}

// PortMap is one forwarded port: connections to Target on the shadow go to Local.
type PortMap struct {
	Local       int
	Target      int32  // the port the shadow listens on (the Service's target port)
	Name        string // the target port's name when the Service refers to it by name
	ServicePort int32
}

// MapPorts matches --expose items to the Service's ports. REMOTE may be a Service port, a
// target port number or a port name. It returns warnings for Service ports left out.
func MapPorts(svc *corev1.Service, w *Workload, exposes []Expose) ([]PortMap, []string, error) {
	var out []PortMap
	used := map[int]bool{}
	for _, e := range exposes {
		idx, other := -1, -1 // the first TCP port that matches, the first other one
		for i, sp := range svc.Spec.Ports {
			tp := sp.TargetPort
			if e.Remote == strconv.Itoa(int(sp.Port)) || e.Remote == sp.Name ||
				(tp.Type == 0 && tp.IntVal != 0 && e.Remote == strconv.Itoa(int(tp.IntVal))) ||
				(tp.Type == 1 && e.Remote == tp.StrVal) {
				if sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP {
					idx = i
					break
				}
				if other < 0 {
					other = i // a UDP port may share its number with a TCP one (DNS does)
				}
			}
		}
		if idx < 0 && other >= 0 {
			sp := svc.Spec.Ports[other]
			return nil, nil, fmt.Errorf("--expose %d:%s: port %d of service %s is %s; kt carries TCP only", e.Local, e.Remote, sp.Port, svc.Name, sp.Protocol)
		}
		if idx < 0 {
			return nil, nil, fmt.Errorf("--expose %d:%s: service %s has no port, target port or port name %q; its ports are %s", e.Local, e.Remote, svc.Name, e.Remote, describePorts(svc))
		}
		sp := svc.Spec.Ports[idx]
		pm := PortMap{Local: e.Local, ServicePort: sp.Port}
		switch {
		case sp.TargetPort.Type == 1:
			pm.Name = sp.TargetPort.StrVal
			pm.Target = namedPort(w, pm.Name)
			if pm.Target == 0 {
				return nil, nil, fmt.Errorf("service %s targets the named port %q, but no container of its workload declares it; expose by number", svc.Name, pm.Name)
			}
		case sp.TargetPort.IntVal != 0:
			pm.Target = sp.TargetPort.IntVal
		default:
			pm.Target = sp.Port
		}
		used[idx] = true
		out = append(out, pm)
	}
	var warnings []string
	for i, sp := range svc.Spec.Ports {
		if !used[i] {
			warnings = append(warnings, fmt.Sprintf("port %d/%s of service %s is not exposed: connections to it are refused while exchanged", sp.Port, protocol(sp), svc.Name))
		}
	}
	return out, warnings, nil
}

func protocol(sp corev1.ServicePort) string {
	if sp.Protocol == "" {
		return "TCP"
	}
	return string(sp.Protocol)
}

func namedPort(w *Workload, name string) int32 {
	if w == nil {
		return 0
	}
	for _, c := range w.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func describePorts(svc *corev1.Service) string {
	var s []string
	for _, sp := range svc.Spec.Ports {
		d := strconv.Itoa(int(sp.Port))
		if sp.Name != "" {
			d = sp.Name + ":" + d
		}
		d += "→" + sp.TargetPort.String()
		s = append(s, d)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// WorkloadUndo is the inverse of exchange's scale mode, stored on the workload.
type WorkloadUndo struct {
	Replicas int32  `json:"replicas"`
	Session  string `json:"session"`
}

// Locals are the local ports of ports.
func Locals(ports []PortMap) []int {
	out := make([]int, len(ports))
	for i, p := range ports {
		out[i] = p.Local
	}
	return out
}
