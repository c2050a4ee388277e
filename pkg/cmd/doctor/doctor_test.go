package doctor

import (
	"bytes"
	"context"
	"strings"
	"testing"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		image string
		ok    bool
	}{
		{"ghcr.io/kubectl-kt/shadow:v1", true},
		{"registry.local:5000/kt/shadow@sha256:0123", true},
		{"", false},
		{"  ", false},
		{"a b", false},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Image = tc.image
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("--image %q: %v", tc.image, err)
		}
	}
	if err := NewOptions(genericiooptions.IOStreams{}).Validate(); err != nil {
		t.Errorf("the default image: %v", err)
	}
}

// allow answers every access review: allowed unless the resource and verb are in deny.
func allow(client *fake.Clientset, deny ...string) {
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		r.Status.Allowed = true
		for _, d := range deny {
			if d == ra.Verb+" "+ra.Resource {
				r.Status.Allowed = false
			}
		}
		return true, r, nil
	})
}

func TestPermissionsAndImage(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"docker.io/library/busybox:1", "ghcr.io/kubectl-kt/shadow:v1"}}}}}
	for _, tc := range []struct {
		name   string
		deny   []string
		image  string
		failed int
		want   []string
	}{
		{"all allowed, image present", nil, "ghcr.io/kubectl-kt/shadow:v1", 0,
			[]string{"ok    may create pods", "ok    shadow image ghcr.io/kubectl-kt/shadow:v1 is present on 1 of 1 nodes"}},
		{"no pod create (nor its port-forward subresource): failures", []string{"create pods"}, "ghcr.io/kubectl-kt/shadow:v1", 2,
			[]string{"FAIL  may not create pods in namespace ns", "FAIL  may not create pods/portforward in namespace ns", "docs/rbac.yaml"}},
		{"no secrets: a warning only", []string{"create secrets"}, "ghcr.io/kubectl-kt/shadow:v1", 0,
			[]string{"warn  may not create secrets: --share-shadow"}},
		{"image on no node", nil, "ghcr.io/kubectl-kt/shadow:v2", 0,
			[]string{"warn  shadow image ghcr.io/kubectl-kt/shadow:v2 is on no node yet", "--image"}},
	} {
		client := fake.NewClientset(node)
		allow(client, tc.deny...)
		var out bytes.Buffer
		d := &doctor{out: &out}
		d.permissions(context.Background(), client, "ns")
		d.image(context.Background(), client, tc.image)
		if d.failed != tc.failed {
			t.Errorf("%s: %d failed, want %d:\n%s", tc.name, d.failed, tc.failed, out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: no %q in\n%s", tc.name, w, out.String())
			}
		}
	}
}

func TestRunFails(t *testing.T) {
	client := fake.NewClientset()
	allow(client, "get pods")
	var out bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &out})
	o.namespace, o.client = "ns", client
	if err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "1 check(s) failed") {
		t.Errorf("a missing permission: %v\n%s", err, out.String())
	}
}

func TestPullFailuresAndThePullSecret(t *testing.T) {
	stuck := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "kt-connect-abc", Labels: map[string]string{wire.ManagedByLabel: wire.ManagedBy}},
		Spec:       corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Image: "ghcr.io/kubectl-kt/shadow:v1",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}},
	}
	secret := func(name string, typ corev1.SecretType) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Type: typ}
	}
	for _, tc := range []struct {
		name       string
		objs       []runtime.Object
		pullSecret string
		failed     int
		want       []string
	}{
		{"a shadow that cannot pull", []runtime.Object{stuck}, "", 1,
			[]string{"FAIL  pod ns/kt-connect-abc cannot pull ghcr.io/kubectl-kt/shadow:v1 on node n1 (ImagePullBackOff", "--image REGISTRY/kubectl-kt/shadow:v1", "--image-pull-secret NAME"}},
		{"no such pull Secret", nil, "regcred", 1,
			[]string{"FAIL  --image-pull-secret regcred: no such Secret in namespace ns", "kubectl create secret docker-registry regcred -n ns"}},
		{"not a registry credential", []runtime.Object{secret("regcred", corev1.SecretTypeOpaque)}, "regcred", 1,
			[]string{"FAIL  --image-pull-secret regcred is of type Opaque"}},
		{"a registry credential", []runtime.Object{secret("regcred", corev1.SecretTypeDockerConfigJson)}, "regcred", 0,
			[]string{"ok    image pull Secret ns/regcred is a registry credential"}},
		{"nothing to say", nil, "", 0, nil},
	} {
		var out bytes.Buffer
		d := &doctor{out: &out}
		d.pulls(context.Background(), fake.NewClientset(tc.objs...), "ns", tc.pullSecret)
		if d.failed != tc.failed {
			t.Errorf("%s: %d failed, want %d:\n%s", tc.name, d.failed, tc.failed, out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: no %q in\n%s", tc.name, w, out.String())
			}
		}
	}
}
