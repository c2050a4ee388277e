package cluster

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// A scale-mode session crashed and left its Deployment of 3 at zero; a second scale-mode
// exchange must come back to 3, not to the 0 it finds (it used to overwrite the record).
func TestScaleToZeroInheritsAnEarlierRecord(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bars", Namespace: "ns", Annotations: map[string]string{wire.UndoAnnotation: `{"replicas":3,"session":"crashed"}`}},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](0)},
	}, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: "ns"},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
	})
	get := func(name string) *appsv1.Deployment {
		d, err := client.AppsV1().Deployments("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	w, err := target.GetWorkload(ctx, client, "ns", target.KindDeployment, "bars")
	if err != nil || w.Undo == nil || w.Undo.Replicas != 3 {
		t.Fatalf("workload %+v, %v", w, err)
	}
	replicas, inherited, err := ScaleToZero(ctx, client, "ns", w, "second")
	if err != nil || replicas != 3 || inherited == nil || inherited.Session != "crashed" {
		t.Fatalf("ScaleToZero: %d %+v %v", replicas, inherited, err)
	}
	if d := get("bars"); d.Annotations[wire.UndoAnnotation] != `{"replicas":3,"session":"crashed"}` || *d.Spec.Replicas != 0 {
		t.Errorf("the record was overwritten: %v, replicas %d", d.Annotations, *d.Spec.Replicas)
	}
	back := *w
	back.Replicas = replicas
	if err := ScaleBack(ctx, client, "ns", &back); err != nil {
		t.Fatal(err)
	}
	if d := get("bars"); *d.Spec.Replicas != 3 || d.Annotations[wire.UndoAnnotation] != "" {
		t.Errorf("after ScaleBack: replicas %d, annotations %v", *d.Spec.Replicas, d.Annotations)
	}

	// A workload with no record gets this session's.
	w, _ = target.GetWorkload(ctx, client, "ns", target.KindDeployment, "fresh")
	if replicas, inherited, err := ScaleToZero(ctx, client, "ns", w, "mine"); err != nil || replicas != 2 || inherited != nil {
		t.Fatalf("ScaleToZero: %d %+v %v", replicas, inherited, err)
	}
	if d := get("fresh"); d.Annotations[wire.UndoAnnotation] != `{"replicas":2,"session":"mine"}` || *d.Spec.Replicas != 0 {
		t.Errorf("fresh: %v, replicas %d", d.Annotations, *d.Spec.Replicas)
	}
}
