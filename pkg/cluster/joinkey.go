package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// A shared shadow's join key (wire/join.go) is in a Secret of the pod's name, owned by the pod
// once it exists, so that the garbage collector removes it with the pod however the pod goes.
// Only who may read Secrets in the namespace can join: pods/portforward is not enough.

// EnsureJoinSecret returns the join key of the shared shadow ns/name that is about to be
// created, making its Secret when there is none. A Secret owned by an earlier pod (gone: a
// new one is being made) is replaced; one owned by nobody yet is another client's, creating
// the pod at the same time, and is used as it is.
func EnsureJoinSecret(ctx context.Context, client kubernetes.Interface, ns, name string, labels map[string]string) ([]byte, error) {
	secrets := client.CoreV1().Secrets(ns)
	for attempt := 0; attempt < 5; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil && len(sec.OwnerReferences) == 0 && len(sec.Data[wire.JoinSecretKey]) >= 32:
			return sec.Data[wire.JoinSecretKey], nil
		case err == nil:
			uid := sec.UID
			err := secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return nil, Explain(err, "delete", "secrets", ns)
			}
			continue
		case !apierrors.IsNotFound(err):
			return nil, Explain(err, "get", "secrets", ns)
		}
		b := make([]byte, 32)
		rand.Read(b)
		key := []byte(hex.EncodeToString(b))
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{wire.JoinSecretKey: key},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			return key, nil
		case !apierrors.IsAlreadyExists(err):
			return nil, Explain(err, "create", "secrets", ns)
		}
		select { // made meanwhile by another client, or the old one still being deleted
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("could not make the join Secret %s/%s of the shared shadow", ns, name)
}

// OwnJoinSecret hands the join Secret to its pod.
func OwnJoinSecret(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) error {
	patch := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":%q,"uid":%q}]}}`, pod.Name, pod.UID)
	_, err := client.CoreV1().Secrets(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return Explain(err, "patch", "secrets", pod.Namespace)
}

// JoinKey reads the join key of the running shared shadow pod. The Secret must be the pod's
// (or no one's yet, while its creator is about to hand it over).
func JoinKey(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) ([]byte, error) {
	sec, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the shared shadow %s/%s has no join Secret (an older kt made it, or not kt): run 'kubectl kt clean' once no one uses it", pod.Namespace, pod.Name)
	}
	if err != nil {
		return nil, Explain(err, "get", "secrets", pod.Namespace)
	}
	for _, o := range sec.OwnerReferences {
		if o.UID != pod.UID {
			return nil, fmt.Errorf("the join Secret %s/%s belongs to another pod than the shared shadow: try again in a moment, or run 'kubectl kt clean'", pod.Namespace, pod.Name)
		}
	}
	if len(sec.Data[wire.JoinSecretKey]) < 32 {
		return nil, fmt.Errorf("the join Secret %s/%s has no %s", pod.Namespace, pod.Name, wire.JoinSecretKey)
	}
	return sec.Data[wire.JoinSecretKey], nil
}

// DeleteJoinSecret deletes the join Secret of the shared shadow ns/name.
func DeleteJoinSecret(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	err := client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return Explain(err, "delete", "secrets", ns)
	}
	return nil
}
