package cluster

import (
	"context"
	"encoding/json"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// ScaleToZero scales the workload to zero and records, on it, the replicas to come back to.
// A record left by an earlier session (one that crashed, leaving the workload at zero) is
// never overwritten: its count is the workload's own, the current one is kt's 0. It returns
// the replicas to restore and the inherited record, if any.
func ScaleToZero(ctx context.Context, client kubernetes.Interface, ns string, w *target.Workload, session string) (int32, *target.WorkloadUndo, error) {
	if w.Undo != nil {
		return w.Undo.Replicas, w.Undo, setWorkload(ctx, client, ns, w, nil, ptr.To[int32](0))
	}
	b, _ := json.Marshal(target.WorkloadUndo{Replicas: w.Replicas, Session: session})
	return w.Replicas, nil, setWorkload(ctx, client, ns, w, map[string]any{wire.UndoAnnotation: string(b)}, ptr.To[int32](0))
}

// ScaleBack is ScaleToZero's inverse: the workload gets w.Replicas and loses the record.
func ScaleBack(ctx context.Context, client kubernetes.Interface, ns string, w *target.Workload) error {
	return setWorkload(ctx, client, ns, w, map[string]any{wire.UndoAnnotation: nil}, ptr.To(w.Replicas))
}

// setWorkload patches annotations (nil deletes) and replicas of a Deployment or StatefulSet.
func setWorkload(ctx context.Context, client kubernetes.Interface, ns string, w *target.Workload, ann map[string]any, replicas *int32) error {
	patch := map[string]any{}
	if ann != nil {
		patch["metadata"] = map[string]any{"annotations": ann}
	}
	if replicas != nil {
		patch["spec"] = map[string]any{"replicas": *replicas}
	}
	b, _ := json.Marshal(patch)
	var err error
	if w.Kind == "Deployment" {
		_, err = client.AppsV1().Deployments(ns).Patch(ctx, w.Name, types.MergePatchType, b, metav1.PatchOptions{})
	} else {
		_, err = client.AppsV1().StatefulSets(ns).Patch(ctx, w.Name, types.MergePatchType, b, metav1.PatchOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	return Explain(err, "patch", strings.ToLower(w.Kind)+"s", ns)
}
