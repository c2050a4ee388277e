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
