package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// The Services kt makes for itself: the origin Services of mesh and exchange, and preview's.

// CreateOriginService makes the origin Service of a mesh or an exchange (session): it selects
// the Service's original pods (selector) on the router's or shadow's port numbers, so that
// the router, and a shadow whose client is away, reach them while the Service itself points
// elsewhere. Its inverse is DeleteService.
func CreateOriginService(ctx context.Context, client kubernetes.Interface, ns, name, session string, selector map[string]string, ports []corev1.ServicePort) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: "origin", wire.ExchangeLabel: session}},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: ports},
	}
	svc, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	return svc, Explain(err, "create", "services", ns)
}

// OriginName names the origin Service of a session (id) on Service svc.
func OriginName(svc, id string) string {
	n := "kt-origin-" + svc
	if len(n) > 56 {
		n = n[:56]
	}
	return n + "-" + id[:min(6, len(id))]
}

// DeleteService deletes a Service kt made (an origin or preview Service); one already gone is
// no error.
func DeleteService(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	err := client.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return Explain(err, "delete", "services", ns)
}

// PreviewService is the Service preview makes for a local port: it selects the session's
// shadow pod and is owned by it, so it goes with the pod.
type PreviewService struct {
	Namespace, Name, Session, Command string
	External                          bool // a LoadBalancer
	Ports                             []int
}

// EnsurePreviewService makes the preview Service exist and belong to pod: it creates it, or
// moves an existing one (still there after its old pod was deleted) to the new pod. Its
// inverse is DeleteService.
func EnsurePreviewService(ctx context.Context, client kubernetes.Interface, cfg PreviewService, pod *corev1.Pod) error {
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true)}}
	svcs := client.CoreV1().Services(cfg.Namespace)
	for {
		old, err := svcs.Get(ctx, cfg.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: cfg.Name, Namespace: cfg.Namespace,
					Labels:          map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: wire.RolePreview, wire.SessionLabel: cfg.Session},
					Annotations:     map[string]string{wire.OwnerAnnotation: wire.Owner(), wire.CommandAnnotation: cfg.Command},
					OwnerReferences: owner},
				Spec: corev1.ServiceSpec{Selector: map[string]string{wire.ExchangeLabel: cfg.Session}},
			}
			if cfg.External {
				svc.Spec.Type = corev1.ServiceTypeLoadBalancer
			}
			for _, p := range cfg.Ports {
				svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("port-%d", p), Port: int32(p), TargetPort: intstr.FromInt32(int32(p))})
			}
			_, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return Explain(err, "create", "services", cfg.Namespace)
		case err != nil:
			return Explain(err, "get", "services", cfg.Namespace)
		case old.Labels[wire.SessionLabel] != cfg.Session:
			return fmt.Errorf("service %s/%s now belongs to someone else; the preview cannot take it back", cfg.Namespace, cfg.Name)
		case old.DeletionTimestamp != nil:
			select { // the garbage collector is removing it with the old pod: wait, then create
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		default:
			old.OwnerReferences = owner
			_, err = svcs.Update(ctx, old, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			}
			return Explain(err, "update", "services", cfg.Namespace)
		}
	}
}
