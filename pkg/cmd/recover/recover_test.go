package recover

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// After a crashed scale-mode exchange the Service is untouched but its Deployment sits at
// zero: recover scales it back (it used to say "nothing to recover").
func TestRecoverScalesBackTheWorkload(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "bars", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bars"}}},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "bars", Namespace: "ns", Annotations: map[string]string{wire.UndoAnnotation: `{"replicas":3,"session":"crashed"}`}},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](0), Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "bars"}}}},
		})
	var out, errOut bytes.Buffer
	o := &Options{Service: "bars", client: client, namespace: "ns", IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &errOut}}
	if err := o.Run(ctx); err != nil {
		t.Fatal(err)
	}
	d, _ := client.AppsV1().Deployments("ns").Get(ctx, "bars", metav1.GetOptions{})
	if *d.Spec.Replicas != 3 || d.Annotations[wire.UndoAnnotation] != "" {
		t.Errorf("replicas %d, annotations %v", *d.Spec.Replicas, d.Annotations)
	}
	if !strings.Contains(out.String(), "scaled back to 3 replicas") || strings.Contains(out.String(), "nothing to recover") {
		t.Errorf("output: %q", out.String())
	}
}

// After a crashed selector-mode exchange, recover restores the Service and deletes what the
// session left: its shadow and the origin Service the shadow fell back to; other sessions'
// objects stay.
func TestRecoverDeletesTheSessionsObjects(t *testing.T) {
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	wire.RedirectService(svc, map[string]string{wire.ExchangeLabel: "s1"})
	wire.SetServiceLock(svc, wire.Lock{Owner: "dev@laptop", Session: "s1", Role: "exchange"})
	owned := func(name, session, role string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{
			wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: role, wire.ExchangeLabel: session}}
	}
	client := fake.NewClientset(svc,
		&corev1.Pod{ObjectMeta: owned("kt-exchange-web-s1", "s1", "exchange")},
		&corev1.Service{ObjectMeta: owned("kt-origin-web-s1", "s1", "origin")},
		&corev1.Service{ObjectMeta: owned("kt-origin-api-s2", "s2", "origin")})
	var out bytes.Buffer
	o := &Options{Service: "web", client: client, namespace: "ns", IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}}
	if err := o.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := client.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{})
	if got.Spec.Selector["app"] != "web" || got.Annotations != nil {
		t.Errorf("not restored: %v %v", got.Spec.Selector, got.Annotations)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "kt-exchange-web-s1", metav1.GetOptions{}); err == nil {
		t.Error("the session's shadow is left")
	}
	if _, err := client.CoreV1().Services("ns").Get(ctx, "kt-origin-web-s1", metav1.GetOptions{}); err == nil {
		t.Error("the session's origin Service is left")
	}
	if _, err := client.CoreV1().Services("ns").Get(ctx, "kt-origin-api-s2", metav1.GetOptions{}); err != nil {
		t.Errorf("another session's origin Service went: %v", err)
	}
	if !strings.Contains(out.String(), "restored (it was exchanged by dev@laptop)") {
		t.Errorf("output: %q", out.String())
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		service string
		ok      bool
	}{{"web", true}, {"web-1", true}, {"Web", false}, {"1web", false}, {"deploy/web", false}, {"", false}} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Service = tc.service
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.service, err)
		}
	}
}

func TestRunErrors(t *testing.T) {
	o := NewOptions(genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	o.Service, o.namespace, o.client = "gone", "ns", fake.NewClientset()
	if err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not found; check the name and -n/--namespace") {
		t.Errorf("a missing Service: %v", err)
	}
	client := fake.NewClientset()
	client.PrependReactor("get", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	o.client = client
	if err := o.Run(context.Background()); err == nil || strings.Contains(err.Error(), "check the name") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("an unreachable API server: %v, want no advice about the name", err)
	}
}
