package cluster

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// SelfRestore is the identity a shadow gets so that it can restore one Service and delete
// itself after its client is gone: a ServiceAccount, and a Role and RoleBinding that allow
// exactly that. Once the pod exists, the pod owns all three, so they go when it goes.
type SelfRestore struct {
	Namespace, Name string // the ServiceAccount, Role and RoleBinding share the name
	client          kubernetes.Interface
}

// CreateSelfRestore creates the identity for the shadow pod podName restoring Service svc.
// Lacking permission to create Roles, it returns an error the caller may treat as a warning.
// deletable names Services the shadow may also delete (a mesh router's origin Service).
func CreateSelfRestore(ctx context.Context, client kubernetes.Interface, ns, podName, svc, session string, deletable ...string) (*SelfRestore, error) {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{svc}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: []string{podName}, Verbs: []string{"delete"}},
	}
	if len(deletable) > 0 {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: deletable, Verbs: []string{"delete"}})
	}
	return createIdentity(ctx, client, ns, podName, session, "self-restore", rules)
}

// CreateSelfDelete creates the identity that lets a shadow Deployment's agent delete that
// Deployment once its client is gone: a ServiceAccount, Role and RoleBinding named like it.
func CreateSelfDelete(ctx context.Context, client kubernetes.Interface, ns, name, session string) (*SelfRestore, error) {
	return createIdentity(ctx, client, ns, name, session, "self-delete", []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{name}, Verbs: []string{"delete"}},
	})
}

// createIdentity creates a ServiceAccount, and a Role with rules bound to it, all named name.
func createIdentity(ctx context.Context, client kubernetes.Interface, ns, name, session, role string, rules []rbacv1.PolicyRule) (*SelfRestore, error) {
	meta := metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
		wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: session, wire.RoleLabel: role}}
	sr := &SelfRestore{Namespace: ns, Name: name, client: client}
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta, AutomountServiceAccountToken: ptr.To(true)}, metav1.CreateOptions{}); err != nil {
		return nil, Explain(err, "create", "serviceaccounts", ns)
	}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: rules}, metav1.CreateOptions{}); err != nil {
		sr.Delete(context.WithoutCancel(ctx))
		return nil, Explain(err, "create", "roles", ns)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}}}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		sr.Delete(context.WithoutCancel(ctx))
		return nil, Explain(err, "create", "rolebindings", ns)
	}
	return sr, nil
}

// OwnByDeployment makes the Deployment the owner of the three objects.
func (sr *SelfRestore) OwnByDeployment(ctx context.Context, d *appsv1.Deployment) error {
	return sr.own(ctx, fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":%q,"uid":%q}]}}`, d.Name, d.UID))
}

// OwnBy makes the pod the owner of the three objects, so the garbage collector removes them
// with the pod (also when the agent deletes itself after restoring the Service).
func (sr *SelfRestore) OwnBy(ctx context.Context, pod *corev1.Pod) error {
	return sr.own(ctx, fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":%q,"uid":%q}]}}`, pod.Name, pod.UID))
}

func (sr *SelfRestore) own(ctx context.Context, patch string) error {
	var errs []error
	_, err := sr.client.CoreV1().ServiceAccounts(sr.Namespace).Patch(ctx, sr.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	errs = append(errs, err)
	_, err = sr.client.RbacV1().Roles(sr.Namespace).Patch(ctx, sr.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	errs = append(errs, err)
	_, err = sr.client.RbacV1().RoleBindings(sr.Namespace).Patch(ctx, sr.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	errs = append(errs, err)
	return errors.Join(errs...)
}

// Delete removes the three objects.
func (sr *SelfRestore) Delete(ctx context.Context) error {
	return DeleteIdentity(ctx, sr.client, sr.Namespace, sr.Name)
}

// DeleteIdentity removes the ServiceAccount, Role and RoleBinding named name in ns, as
// createIdentity made them, whichever of them exist.
func DeleteIdentity(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	var errs []error
	for _, err := range []error{
		client.RbacV1().RoleBindings(ns).Delete(ctx, name, metav1.DeleteOptions{}),
		client.RbacV1().Roles(ns).Delete(ctx, name, metav1.DeleteOptions{}),
		client.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{}),
	} {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
