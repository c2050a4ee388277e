package preview

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cluster/clustertest"
	"github.com/kubectl-kt/kt/pkg/session/sessiontest"
	"github.com/kubectl-kt/kt/pkg/wire"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitFor(t *testing.T, out *syncBuffer, done <-chan error, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("Run ended (%v) before %q:\n%s", err, want, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 20 s:\n%s", want, out.String())
		}
	}
}

// previewService checks the preview Service and returns the pod that owns it.
func previewService(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	s, err := client.CoreV1().Services("ns").Get(context.Background(), "web-dev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 80 || s.Spec.Ports[0].TargetPort.IntVal != 80 || s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		t.Errorf("ports %v, type %s", s.Spec.Ports, s.Spec.Type)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "Pod" {
		t.Fatalf("owners %v: the Service must go with its shadow pod", s.OwnerReferences)
	}
	return s.OwnerReferences[0].Name
}

func TestRun(t *testing.T) {
	client := clustertest.New()
	st := &sessiontest.Starter{Client: client}
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	cfg := Config{Client: client, Namespace: "ns", Name: "web-dev", Ports: []Port{{Local: 18080, Remote: 80}}, SkipPortChecking: true,
		Pod: cluster.NewPodOptions(), Command: "kubectl kt preview web-dev", ErrOut: out, Start: st.Start}
	go func() { done <- Run(ctx, cfg) }()
	waitFor(t, out, done, "Previewing: service ns/web-dev (ClusterIP)")
	first := previewService(t, client)
	if err := cluster.WaitEndpoints(ctx, client, "ns", "web-dev", []string{st.Started()[0].ShadowPod().Status.PodIP}, time.Second); err != nil {
		t.Error(err)
	}

	// A second preview of the same name is refused.
	if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second preview web-dev: %v", err)
	}

	// The shadow is lost: a new one takes over the Service.
	st.Started()[0].Lose()
	waitFor(t, out, done, "took over: service web-dev sends its traffic here again")
	if second := previewService(t, client); second == first || len(st.Started()) != 2 {
		t.Errorf("after the loss the Service belongs to %s (the first was %s); %d shadows", second, first, len(st.Started()))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if _, err := client.CoreV1().Services("ns").Get(context.Background(), "web-dev", metav1.GetOptions{}); err == nil {
		t.Error("the preview Service is left behind")
	}
	pods, _ := client.CoreV1().Pods("ns").List(context.Background(), metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if len(pods.Items) != 0 {
		t.Errorf("%d shadow pods left", len(pods.Items))
	}
}
