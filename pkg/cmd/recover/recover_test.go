package recover

import (
	"bytes"
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
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
	o := &Options{client: client, namespace: "ns", IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &errOut}}
	if err := o.Run(ctx, "bars"); err != nil {
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
