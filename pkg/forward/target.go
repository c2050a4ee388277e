package forward

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	kubectlutil "k8s.io/kubectl/pkg/util"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/target"
)

// podSource is where forward finds its pod.
type podSource struct {
	what     string          // "service NS/NAME", for messages
	selector labels.Selector // the pods to choose from; nil for one named pod
	pod      string          // that pod
	portOf   func(remote string) (*podPort, error)
}

// podPort is one REMOTE resolved.
type podPort struct {
	remote string // the port as the user knows it, for messages
	local  int    // the local port when none is given
	on     func(*corev1.Pod) (uint16, error)
}

// pods lists the pods to choose from.
func (s *podSource) pods(ctx context.Context, cfg Config) ([]corev1.Pod, error) {
	if s.selector == nil {
		p, err := cfg.Client.CoreV1().Pods(cfg.Namespace).Get(ctx, s.pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, cluster.Explain(err, "get", "pods", cfg.Namespace)
		}
		return []corev1.Pod{*p}, nil
	}
	l, err := cfg.Client.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.selector.String()})
	if err != nil {
		return nil, cluster.Explain(err, "list", "pods", cfg.Namespace)
	}
	return l.Items, nil
}

const targetKinds = "svc/NAME, deploy/NAME, sts/NAME, pod/NAME, a Service NAME or HOST:PORT"

// ErrNotFound is in the error of a target that does not exist.
var ErrNotFound = target.ErrNotFound

// resolve finds what cfg.Target names.
func resolve(ctx context.Context, cfg Config) (*podSource, error) {
	kind, name, ok := target.ParseRef(cfg.Target)
	if !ok {
		return nil, fmt.Errorf("%q: forward takes %s", cfg.Target, targetKinds)
	}
	ns := cfg.Namespace
	notFound := func(what string) error {
		return fmt.Errorf("%s %s/%s %w; check the name and -n/--namespace", what, ns, name, ErrNotFound)
	}
	switch kind {
	case target.KindService:
		svc, err := cfg.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, notFound("service")
		}
		if err != nil {
			return nil, err
		}
		if len(svc.Spec.Selector) == 0 {
			return nil, fmt.Errorf("service %s/%s selects no pods; forward to one of its addresses as HOST:PORT instead", ns, name)
		}
		return &podSource{what: "service " + ns + "/" + name, selector: labels.SelectorFromSet(svc.Spec.Selector),
			portOf: func(remote string) (*podPort, error) {
				sp, err := servicePort(svc, remote)
				if err != nil {
					return nil, err
				}
				return &podPort{remote: strconv.Itoa(int(sp.Port)), local: int(sp.Port), on: func(p *corev1.Pod) (uint16, error) { return targetPort(svc, p, sp.Port) }}, nil
			}}, nil
	case target.KindDeployment, target.KindStatefulSet:
		w, err := target.GetWorkload(ctx, cfg.Client, ns, kind, name)
		if err != nil {
			return nil, err
		}
		what := strings.ToLower(w.Kind) + " " + ns + "/" + name
		selector, err := metav1.LabelSelectorAsSelector(w.Selector)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return &podSource{what: what, selector: selector, portOf: func(remote string) (*podPort, error) { return containerPort(what, w.Containers, remote) }}, nil
	default: // target.KindPod
		p, err := cfg.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, notFound("pod")
		}
		if err != nil {
			return nil, err
		}
		what := "pod " + ns + "/" + name
		return &podSource{what: what, pod: name, portOf: func(remote string) (*podPort, error) { return containerPort(what, p.Spec.Containers, remote) }}, nil
	}
}

// containerPort is the container port that remote names in containers: a number (declared or not, as
// kubectl port-forward takes it) or a declared port's name, or the only declared TCP port when
// remote is empty.
func containerPort(what string, containers []corev1.Container, remote string) (*podPort, error) {
	var tcp []corev1.ContainerPort
	var all []string
	for _, c := range containers {
		for _, cp := range c.Ports {
			proto := cp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			desc := fmt.Sprintf("%d/%s", cp.ContainerPort, proto)
			if cp.Name != "" {
				desc = cp.Name + " " + desc
			}
			all = append(all, desc)
			if proto == corev1.ProtocolTCP {
				tcp = append(tcp, cp)
			}
		}
	}
	declared := "declares no ports"
	if len(all) > 0 {
		declared = "declares " + strings.Join(all, ", ")
	}
	var port int32
	switch n, err := strconv.Atoi(remote); {
	case remote == "" && len(tcp) == 1:
		port = tcp[0].ContainerPort
	case remote == "":
		return nil, fmt.Errorf("%s %s; name the port to forward to: [LOCAL:]REMOTE", what, declared)
	case err == nil && n >= 1 && n <= 65535:
		port = int32(n)
	case err == nil:
		return nil, fmt.Errorf("port %s is not a number from 1 to 65535", remote)
	default:
		for _, cp := range tcp {
			if cp.Name == remote {
				port = cp.ContainerPort
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("%s has no TCP port named %q; it %s", what, remote, declared)
		}
	}
	return &podPort{remote: strconv.Itoa(int(port)), local: int(port), on: func(*corev1.Pod) (uint16, error) { return uint16(port), nil }}, nil
}

// servicePort is the port of svc that remote names (its number or its name), or its only TCP
// port when remote is empty. forward carries TCP: a UDP or SCTP port is refused.
func servicePort(svc *corev1.Service, remote string) (*corev1.ServicePort, error) {
	var tcp []*corev1.ServicePort
	var all []string
	for i, p := range svc.Spec.Ports {
		desc := fmt.Sprintf("%d/%s", p.Port, protocol(p))
		if p.Name != "" {
			desc = p.Name + " " + desc
		}
		all = append(all, desc)
		if protocol(p) == corev1.ProtocolTCP {
			tcp = append(tcp, &svc.Spec.Ports[i])
		}
	}
	ports := strings.Join(all, ", ")
	named := func(p corev1.ServicePort) bool { return remote == strconv.Itoa(int(p.Port)) || remote == p.Name }
	switch {
	case remote == "" && len(tcp) == 1:
		return tcp[0], nil
	case remote == "" && len(tcp) == 0:
		return nil, fmt.Errorf("service %s has no TCP port (%s); forward carries TCP only", svc.Name, ports)
	case remote == "":
		return nil, fmt.Errorf("service %s has several TCP ports (%s); name one: kubectl kt forward svc/%s [LOCAL:]REMOTE", svc.Name, ports, svc.Name)
	}
	for _, p := range tcp { // a UDP port may share its number with the TCP one
		if named(*p) {
			return p, nil
		}
	}
	for _, p := range svc.Spec.Ports {
		if named(p) {
			return nil, fmt.Errorf("service %s: port %s is %s; forward carries TCP only", svc.Name, remote, protocol(p))
		}
	}
	return nil, fmt.Errorf("service %s has no port %q; its ports: %s", svc.Name, remote, ports)
}

func protocol(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// targetPort is the pod's port that the Service's port sends to, as kubectl port-forward finds
// it: a named targetPort looked up in the pod's containers, the port itself for a headless
// Service.
func targetPort(svc *corev1.Service, p *corev1.Pod, port int32) (uint16, error) {
	n, err := kubectlutil.LookupContainerPortNumberByServicePort(*svc, *p, port)
	if err != nil {
		return 0, err
	}
	return uint16(n), nil
}

// RunningPod returns a running pod of target (svc/NAME, deploy/NAME, sts/NAME, pod/NAME or a
// Service NAME), a ready one if there is one.
func RunningPod(ctx context.Context, client kubernetes.Interface, ns, target string) (*corev1.Pod, error) {
	src, err := resolve(ctx, Config{Client: client, Namespace: ns, Target: target})
	if err != nil {
		return nil, err
	}
	pods, err := src.pods(ctx, Config{Client: client, Namespace: ns})
	if err != nil {
		return nil, err
	}
	var running *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		if podutils.IsPodReady(p) {
			return p, nil
		}
		if running == nil {
			running = p
		}
	}
	if running == nil {
		return nil, fmt.Errorf("%s has no running pod", src.what)
	}
	return running, nil
}
