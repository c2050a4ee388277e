package mesh

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cluster/clustertest"
	"github.com/kubectl-kt/kt/pkg/session/sessiontest"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// fakeRouter routes what the Service's mesh state lists, as the real router does (it reads
// the Service every second).
type fakeRouter struct {
	client  kubernetes.Interface
	svc     string
	mu      sync.Mutex
	drained int
}

func (r *fakeRouter) Routes(ctx context.Context, ns, pod string) ([]wire.MeshMember, error) {
	s, err := r.client.CoreV1().Services(ns).Get(ctx, r.svc, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	st, ok := wire.GetMesh(s)
	if !ok || st.Router != pod {
		return nil, nil
	}
	return st.Live(cluster.StaleAfter), nil
}

func (r *fakeRouter) Mirrors(context.Context, string, string) (map[string]wire.MirrorStats, error) {
	return nil, nil
}

func (r *fakeRouter) Drain(context.Context, string, string, *corev1.Pod) {
	r.mu.Lock()
	r.drained++
	r.mu.Unlock()
}

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

// developer is one mesh Run in the background.
type developer struct {
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func startMesh(client kubernetes.Interface, router *fakeRouter, mark string, local int) *developer {
	key, value, _ := strings.Cut(mark, ":")
	ctx, cancel := context.WithCancel(context.Background())
	d := &developer{out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	st := &sessiontest.Starter{Client: client}
	go func() {
		d.done <- Run(ctx, Config{Client: client, Namespace: "ns", Target: "svc/web", Mode: ModeAuto, Key: key, Value: value,
			Expose: []target.Expose{{Local: local, Remote: "80"}}, SkipPortChecking: true, Pod: cluster.NewPodOptions(),
			Command: "kubectl kt mesh web", ErrOut: d.out, Start: st.Start, Router: router})
	}()
	return d
}

// wait waits until the developer's output has want, or Run has ended.
func (d *developer) wait(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.out.String(), want) {
		select {
		case err := <-d.done:
			t.Fatalf("Run ended (%v) before %q:\n%s", err, want, d.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 20 s:\n%s", want, d.out.String())
		}
	}
}

func (d *developer) stop(t *testing.T) string {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run: %v\n%s", err, d.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return:\n%s", d.out.String())
	}
	return d.out.String()
}

// webCluster is a fake cluster with Service web (port 80 → 8080) and the Deployment behind
// it, which has no pod, and a router that routes what the Service's mesh state lists.
func webCluster() (sel map[string]string, client kubernetes.Interface, router *fakeRouter) {
	sel = map[string]string{"app": "web"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "svc-uid"},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}}
	client = clustertest.New(svc, dep)
	return sel, client, &fakeRouter{client: client, svc: "web"}
}

func TestRunAutoJoinAndLeave(t *testing.T) {
	sel, client, router := webCluster()
	ctx := context.Background()
	get := func() *corev1.Service {
		s, err := client.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	dev1 := startMesh(client, router, "kt-version:one", 18081)
	dev1.wait(t, "Meshed service ns/web")
	if !strings.Contains(dev1.out.String(), "Started mesh router for service ns/web") {
		t.Errorf("the first developer did not start the router:\n%s", dev1.out.String())
	}
	s := get()
	st, ok := wire.GetMesh(s)
	if !ok || len(st.Members) != 1 || st.Members[0].Value != "one" {
		t.Fatalf("mesh state after the first: %+v", st)
	}
	l, _ := wire.ServiceLock(s)
	if !maps.Equal(s.Spec.Selector, map[string]string{wire.ExchangeLabel: l.Session}) {
		t.Errorf("the Service selects %v, not the router", s.Spec.Selector)
	}
	origin, err := client.CoreV1().Services("ns").Get(ctx, st.Origin, metav1.GetOptions{})
	if err != nil || !maps.Equal(origin.Spec.Selector, sel) || origin.Spec.Ports[0].Port != 8080 {
		t.Fatalf("origin Service: %v, %v", origin, err)
	}
	rp, err := client.CoreV1().Pods("ns").Get(ctx, st.Router, metav1.GetOptions{})
	if err != nil || rp.Spec.RestartPolicy != corev1.RestartPolicyOnFailure || rp.Labels[wire.ExchangeLabel] != l.Session {
		t.Fatalf("router pod: %v, %v", rp, err)
	}

	dev2 := startMesh(client, router, "kt-version:two", 18082)
	dev2.wait(t, "Meshed service ns/web")
	if strings.Contains(dev2.out.String(), "Started mesh router") {
		t.Errorf("the second developer started a router of its own:\n%s", dev2.out.String())
	}
	if st, _ := wire.GetMesh(get()); len(st.Members) != 2 || st.Router != rp.Name {
		t.Errorf("mesh state with two: %+v", st)
	}

	// A third developer with a mark already in use is refused, and nothing changes.
	before := get().Annotations
	dev3 := startMesh(client, router, "kt-version:one", 18083)
	select {
	case err := <-dev3.done:
		if err == nil || !strings.Contains(err.Error(), "already used by") {
			t.Errorf("a mark in use: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a mark in use: Run did not return")
	}
	if st, _ := wire.GetMesh(get()); len(st.Members) != 2 {
		t.Errorf("after the refused third: %d members (annotations before %v)", len(st.Members), before)
	}

	if out := dev1.stop(t); !strings.Contains(out, "Left the mesh of service ns/web; 1 other session(s) still mesh or mirror it") {
		t.Errorf("the first to leave:\n%s", out)
	}
	if st, ok := wire.GetMesh(get()); !ok || len(st.Members) != 1 || st.Members[0].Value != "two" {
		t.Errorf("after the first left: %+v", st)
	}
	if out := dev2.stop(t); !strings.Contains(out, "Restored service ns/web (the last developer left the mesh) and removed its router") {
		t.Errorf("the last to leave:\n%s", out)
	}
	after := get()
	if !maps.Equal(after.Spec.Selector, sel) || len(after.Annotations) != 0 {
		t.Errorf("after: selector %v, annotations %v", after.Spec.Selector, after.Annotations)
	}
	svcs, _ := client.CoreV1().Services("ns").List(ctx, metav1.ListOptions{})
	pods, _ := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	sas, _ := client.CoreV1().ServiceAccounts("ns").List(ctx, metav1.ListOptions{})
	if len(svcs.Items) != 1 || len(pods.Items) != 0 {
		t.Errorf("left behind: %d Services, %d kt pods", len(svcs.Items), len(pods.Items))
	}
	roles, _ := client.RbacV1().Roles("ns").List(ctx, metav1.ListOptions{})
	if len(sas.Items) != 0 || len(roles.Items) != 0 {
		t.Errorf("the router's identity is left behind: %d service accounts, %d roles", len(sas.Items), len(roles.Items))
	}
	if router.drained != 1 {
		t.Errorf("the router was drained %d times before its deletion, want 1", router.drained)
	}
}

// A mesh of a Service with no ready pod says that the requests it does not take fail; with
// one, it says nothing of the kind.
func TestRunSaysWhenNoPodIsReady(t *testing.T) {
	sel, client, router := webCluster()
	const note = "note: service ns/web has no ready pod: requests without the header fail (the router answers HTTP with 502 Bad Gateway) until one is ready"

	d := startMesh(client, router, "kt-version:one", 18081)
	d.wait(t, "Meshed service ns/web")
	if out := d.stop(t); !strings.Contains(out, note) {
		t.Errorf("no ready pod, and no note:\n%s", out)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", Labels: sel},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	if _, err := client.CoreV1().Pods("ns").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = startMesh(client, router, "kt-version:one", 18081)
	d.wait(t, "Meshed service ns/web")
	if out := d.stop(t); strings.Contains(out, "no ready pod") {
		t.Errorf("a ready pod, and the note:\n%s", out)
	}
}

func TestNoPodFails(t *testing.T) {
	if got := noPodFails(true); !strings.Contains(got, "none is copied") {
		t.Errorf("mirror: %q", got)
	}
	if got := noPodFails(false); strings.Contains(got, "copied") || !strings.Contains(got, "without the header") {
		t.Errorf("mesh: %q", got)
	}
}
