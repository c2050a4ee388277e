package inventory

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// shadowPod is an exchange's shadow of session with a fallback of after, stamped hbAgo ago.
func shadowPod(name, session string, after string, hbAgo time.Duration) *corev1.Pod {
	c := corev1.Container{Name: "agent", Args: []string{"--expire-after=60s"}}
	if after != "" {
		c.Args = append(c.Args, "--fallback-after="+after)
		c.Env = []corev1.EnvVar{{Name: wire.EnvFallback, Value: "8080=10.96.0.9:8080"}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
			Labels:      map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: wire.RoleExchange, wire.ExchangeLabel: session},
			Annotations: map[string]string{wire.HeartbeatAnnotation: time.Now().Add(-hbAgo).UTC().Format(time.RFC3339), wire.OwnerAnnotation: "dev@laptop"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{c}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.9"},
	}
}

func TestPaused(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"heartbeat fresh", shadowPod("a", "s", "10s", 5*time.Second), false},
		{"heartbeat older than fallback and interval", shadowPod("a", "s", "10s", 40*time.Second), true},
		{"heartbeat late but within fallback and interval", shadowPod("a", "s", "10s", 25*time.Second), false},
		{"no fallback", shadowPod("a", "s", "", 5*time.Minute), false},
		{"not running", func() *corev1.Pod {
			p := shadowPod("a", "s", "10s", time.Minute)
			p.Status.Phase = corev1.PodSucceeded
			return p
		}(), false},
	} {
		if got := Paused(tc.pod, now); got != tc.want {
			t.Errorf("%s: Paused = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestServicesShowAPausedExchange(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}}
	wire.SetServiceLock(svc, wire.Lock{Owner: "dev@laptop", Session: "s1", Role: wire.RoleExchange, Heartbeat: time.Now()})
	client := fake.NewClientset(svc, shadowPod("kt-exchange-x", "s1", "10s", time.Minute))
	svcs, err := Services(context.Background(), client, "ns")
	if err != nil || len(svcs) != 1 || !strings.Contains(svcs[0].Status, "paused") {
		t.Fatalf("Services = %+v, %v; want web exchanged and paused", svcs, err)
	}
	shadows, err := Shadows(context.Background(), client, "ns")
	if err != nil || len(shadows) != 1 || !shadows[0].Paused {
		t.Errorf("Shadows = %+v, %v; want the shadow paused", shadows, err)
	}
}
