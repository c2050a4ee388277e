package clean

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// A shadow Deployment's pod has a hashed name: clean used to take its identity for a gone
// pod's and delete it. Liveness is the session's heartbeat, whatever the pods are called.
func TestCleanKeepsALiveSessionsIdentity(t *testing.T) {
	t.Setenv("KT_STATE_DIR", t.TempDir()+"/state")
	ctx := context.Background()
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	ident := func(name, session string) *corev1.ServiceAccount {
		return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: old,
			Labels: map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: session}}}
	}
	pod := func(name, session string, heartbeat time.Time) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: old,
			Labels:      map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: session},
			Annotations: map[string]string{wire.HeartbeatAnnotation: heartbeat.UTC().Format(time.RFC3339)}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	client := fake.NewClientset(
		ident("kt-connect-live", "live"), pod("kt-connect-live-7d9f8b6c5-x2x7q", "live", time.Now()),
		ident("kt-connect-gone", "gone"), pod("kt-connect-gone-5b7c9d8f6-abcde", "gone", time.Now().Add(-time.Hour)),
		ident("kt-exchange-nopod", "nopod"),
	)
	var out bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}})
	o.client, o.namespace = client, "ns"
	if err := o.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"kt-connect-live": true, "kt-connect-gone": false, "kt-exchange-nopod": false} {
		_, err := client.CoreV1().ServiceAccounts("ns").Get(ctx, name, metav1.GetOptions{})
		if (err == nil) != want {
			t.Errorf("%s: kept %v, want %v\n%s", name, err == nil, want, out.String())
		}
	}
	if strings.Contains(out.String(), "kt-connect-live ") {
		t.Errorf("clean reported the live identity:\n%s", out.String())
	}
}

// A client killed between making a shared shadow's join Secret and its pod left the Secret
// with no pod to own it: clean removes it, and keeps a live shared shadow's.
func TestCleanRemovesAGoneSharedShadowsJoinKey(t *testing.T) {
	t.Setenv("KT_STATE_DIR", t.TempDir()+"/state")
	ctx := context.Background()
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	secret := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kt-connect-shared", Namespace: ns, CreationTimestamp: old,
			Labels: map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: "shared"}}}
	}
	live := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kt-connect-shared", Namespace: "a", CreationTimestamp: old,
		Labels:      map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: "shared"},
		Annotations: map[string]string{wire.HeartbeatAnnotation: time.Now().UTC().Format(time.RFC3339)}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	client := fake.NewClientset(secret("a"), live, secret("b"))
	var out bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}})
	o.client, o.AllNamespaces = client, true
	if err := o.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"a": true, "b": false} {
		_, err := client.CoreV1().Secrets(ns).Get(ctx, "kt-connect-shared", metav1.GetOptions{})
		if (err == nil) != want {
			t.Errorf("%s: kept %v, want %v\n%s", ns, err == nil, want, out.String())
		}
	}
}
