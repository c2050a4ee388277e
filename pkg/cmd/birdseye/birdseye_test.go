package birdseye

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		sortBy string
		ok     bool
	}{{"status", true}, {"name", true}, {"age", false}, {"", false}} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.SortBy = tc.sortBy
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("--sort-by %q: %v", tc.sortBy, err)
		} else if err != nil && !strings.Contains(err.Error(), "use status or name") {
			t.Errorf("--sort-by %q: %v does not say what to use", tc.sortBy, err)
		}
	}
}

func TestRun(t *testing.T) {
	svc := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	}
	locked := svc("b-web")
	wire.SetServiceLock(locked, wire.Lock{Owner: "dev@laptop", Session: "s1", Role: wire.RoleExchange, Heartbeat: time.Now()})
	shadow := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kt-connect-x", Namespace: "other",
		Labels:      map[string]string{wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: wire.RoleConnect},
		Annotations: map[string]string{wire.OwnerAnnotation: "dev2@laptop"}}}
	client := fake.NewClientset(svc("a-db"), locked, svc("c-api"), shadow)
	run := func(set func(*Options)) string {
		var out bytes.Buffer
		o := NewOptions(genericiooptions.IOStreams{Out: &out})
		o.namespace, o.client = "ns", client
		set(o)
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	rows := func(s string) []string {
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n")[1:] {
			names = append(names, strings.Fields(l)[0])
		}
		return names
	}
	if got := rows(run(func(*Options) {})); strings.Join(got, " ") != "b-web a-db c-api" {
		t.Errorf("by status: %v, want the exchanged Service first", got)
	}
	if got := rows(run(func(o *Options) { o.SortBy = "name" })); strings.Join(got, " ") != "a-db b-web c-api" {
		t.Errorf("by name: %v", got)
	}
	out := run(func(o *Options) { o.HideNatural = true })
	if got := rows(out); strings.Join(got, " ") != "b-web" || !strings.Contains(out, "exchanged") || !strings.Contains(out, "dev@laptop") {
		t.Errorf("--hide-natural-service:\n%s", out)
	}
	if out := run(func(o *Options) { o.ShowConnector = true }); !strings.Contains(out, "CONNECTED") || !strings.Contains(out, "dev2@laptop") || !strings.Contains(out, "kt-connect-x") {
		t.Errorf("--show-connector:\n%s", out)
	}
}
