package inventory

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestWarnStale(t *testing.T) {
	svc := func(name string, hb time.Time) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}}
		if !hb.IsZero() {
			wire.SetServiceLock(s, wire.Lock{Owner: "alice@laptop", Session: "s", Role: wire.RoleExchange, Heartbeat: hb})
		}
		return s
	}
	client := fake.NewClientset(svc("stale", time.Now().Add(-10*time.Minute)), svc("live", time.Now()), svc("plain", time.Time{}))
	var b bytes.Buffer
	if n := WarnStale(context.Background(), client, "ns", &b); n != 1 {
		t.Fatalf("warned about %d Services, want 1:\n%s", n, b.String())
	}
	if !strings.Contains(b.String(), "ns/stale is still exchanged by alice@laptop") || !strings.Contains(b.String(), "kubectl kt recover stale") {
		t.Errorf("warning: %s", b.String())
	}
}
