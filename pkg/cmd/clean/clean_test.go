package clean

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

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

// A restore that fails used to end clean at once, with the pods and identities after it left,
// or (a list that failed) pass in silence. Now the rest is cleaned, each failure is printed,
// and the exit code is not 0.
func TestCleanGoesOnAfterAFailureAndReportsIt(t *testing.T) {
	t.Setenv("KT_STATE_DIR", t.TempDir()+"/state")
	ctx := context.Background()
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	lock, _ := json.Marshal(wire.Lock{Owner: "dev@laptop", Session: "gone", Role: "exchange", Heartbeat: old.Time})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Annotations: map[string]string{wire.LockAnnotation: string(lock)}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kt-exchange-gone", Namespace: "ns", CreationTimestamp: old,
		Labels:      map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.SessionLabel: "gone"},
		Annotations: map[string]string{wire.HeartbeatAnnotation: old.UTC().Format(time.RFC3339)}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	client := fake.NewClientset(svc, pod)
	client.PrependReactor("update", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("the API server refused")
	})
	client.PrependReactor("list", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd timed out")
	})
	var out, errOut bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &errOut})
	o.client, o.namespace = client, "ns"
	err := o.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "the API server refused") || !strings.Contains(err.Error(), "etcd timed out") {
		t.Errorf("Run: %v, want both failures", err)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
		t.Errorf("the stale pod after the failed restore was left:\n%s%s", out.String(), errOut.String())
	}
	if !strings.Contains(errOut.String(), "restore service ns/web") {
		t.Errorf("the failed restore was not printed:\n%s", errOut.String())
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		threshold time.Duration
		ok        bool
	}{{0, true}, {2 * time.Minute, true}, {-time.Second, false}} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Threshold = tc.threshold
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("--threshold %v: %v", tc.threshold, err)
		}
	}
}
