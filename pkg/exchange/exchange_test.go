package exchange

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cluster/clustertest"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/session/sessiontest"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// syncBuffer is an io.Writer that Run writes to while the test reads it.
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

func objects() (*corev1.Service, *appsv1.Deployment, []*corev1.Pod) {
	sel := map[string]string{"app": "web"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "svc-uid"},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}}
	var pods []*corev1.Pod
	for _, n := range []string{"web-1", "web-2"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "ns", Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
		clustertest.Start(p, "10.244.0."+n[len(n)-1:])
		pods = append(pods, p)
	}
	return svc, d, pods
}

// exchange runs Run until the Service is exchanged, calls during, then stops it and returns
// Run's error and output.
func exchange(t *testing.T, client kubernetes.Interface, mode string, during func(started []*sessiontest.Shadow)) (error, string, []*sessiontest.Shadow) {
	t.Helper()
	var out func() string
	return exchangeOut(t, client, mode, &out, during)
}

// exchangeOut is exchange, with *outOf set to read the output so far.
func exchangeOut(t *testing.T, client kubernetes.Interface, mode string, outOf *func() string, during func(started []*sessiontest.Shadow)) (error, string, []*sessiontest.Shadow) {
	t.Helper()
	st := &sessiontest.Starter{Client: client}
	out := &syncBuffer{}
	*outOf = out.String
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Client: client, Namespace: "ns", Target: "svc/web", Mode: mode, SkipPortChecking: true,
			Expose: []target.Expose{{Local: 18080, Remote: "80"}}, RecoverWaitTime: 5 * time.Second,
			Pod: cluster.NewPodOptions(), Command: "kubectl kt exchange web", ErrOut: out, Start: st.Start})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "Exchanged service ns/web") {
		select {
		case err := <-done:
			return err, out.String(), st.Started()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not exchanged after 20 s:\n%s", out.String())
		}
	}
	during(st.Started())
	cancel()
	select {
	case err := <-done:
		return err, out.String(), st.Started()
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return after its context ended:\n%s", out.String())
	}
	return nil, "", nil
}

func getService(t *testing.T, client kubernetes.Interface) *corev1.Service {
	t.Helper()
	s, err := client.CoreV1().Services("ns").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// leftOver lists kt's objects still in the fake cluster.
func leftOver(t *testing.T, client kubernetes.Interface) []string {
	t.Helper()
	ctx := context.Background()
	kt := metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy}
	var left []string
	pods, _ := client.CoreV1().Pods("ns").List(ctx, kt)
	for _, p := range pods.Items {
		left = append(left, "pod/"+p.Name)
	}
	sas, _ := client.CoreV1().ServiceAccounts("ns").List(ctx, metav1.ListOptions{})
	for _, s := range sas.Items {
		left = append(left, "serviceaccount/"+s.Name)
	}
	roles, _ := client.RbacV1().Roles("ns").List(ctx, metav1.ListOptions{})
	for _, r := range roles.Items {
		left = append(left, "role/"+r.Name)
	}
	rbs, _ := client.RbacV1().RoleBindings("ns").List(ctx, metav1.ListOptions{})
	for _, r := range rbs.Items {
		left = append(left, "rolebinding/"+r.Name)
	}
	return left
}

func TestRunSelectorMode(t *testing.T) {
	svc, d, pods := objects()
	client := clustertest.New(svc, d, pods[0], pods[1])
	err, out, started := exchange(t, client, ModeSelector, func(started []*sessiontest.Shadow) {
		s := getService(t, client)
		l, locked := wire.ServiceLock(s)
		if !locked || l.Role != wire.RoleExchange || l.Command != "kubectl kt exchange web" {
			t.Errorf("while exchanged: lock %+v, %v", l, locked)
		}
		if want := map[string]string{wire.ExchangeLabel: l.Session}; !maps.Equal(s.Spec.Selector, want) {
			t.Errorf("while exchanged: selector %v, want %v", s.Spec.Selector, want)
		}
		if err := cluster.WaitEndpoints(context.Background(), client, "ns", "web", []string{started[0].ShadowPod().Status.PodIP}, time.Second); err != nil {
			t.Errorf("while exchanged: %v", err)
		}
		if len(leftOver(t, client)) != 4 { // the shadow and the identity it restores the Service with
			t.Errorf("while exchanged: kt objects %v, want the shadow and its service account, role and binding", leftOver(t, client))
		}
		// A second exchange of the same Service is refused and changes nothing.
		err := Run(context.Background(), Config{Client: client, Namespace: "ns", Target: "web", SkipPortChecking: true,
			Expose: []target.Expose{{Local: 18081, Remote: "80"}}, Pod: cluster.NewPodOptions(), ErrOut: &bytes.Buffer{},
			Start: func(context.Context, session.Options) (session.Shadow, error) {
				return nil, errors.New("started a shadow")
			}})
		var le *cluster.LockedError
		if !errors.As(err, &le) {
			t.Errorf("a second exchange: %v, want a LockedError", err)
		}
		if got := getService(t, client); !maps.Equal(got.Spec.Selector, s.Spec.Selector) || !maps.Equal(got.Annotations, s.Annotations) {
			t.Errorf("the refused exchange changed the Service: %v %v", got.Spec.Selector, got.Annotations)
		}
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Restored service ns/web and deleted the shadow") {
		t.Errorf("output:\n%s", out)
	}
	after := getService(t, client)
	if !maps.Equal(after.Spec.Selector, svc.Spec.Selector) || len(after.Annotations) != 0 {
		t.Errorf("after: selector %v, annotations %v; want the original selector and no annotations", after.Spec.Selector, after.Annotations)
	}
	if left := leftOver(t, client); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if len(started) != 1 || !started[0].Closed() || len(started[0].Drained()) != 1 {
		t.Errorf("shadows %d; the first closed %v, drained from %v", len(started), started[0].Closed(), started[0].Drained())
	}
}

func TestRunScaleMode(t *testing.T) {
	svc, d, pods := objects()
	client := clustertest.New(svc, d, pods[0], pods[1])
	err, out, _ := exchange(t, client, ModeScale, func(started []*sessiontest.Shadow) {
		w, err := client.AppsV1().Deployments("ns").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil || *w.Spec.Replicas != 0 || !strings.Contains(w.Annotations[wire.UndoAnnotation], `"replicas":2`) {
			t.Errorf("while exchanged: deployment %v, %v", w.Spec.Replicas, w.Annotations)
		}
		s := getService(t, client)
		if !maps.Equal(s.Spec.Selector, svc.Spec.Selector) {
			t.Errorf("scale mode changed the selector: %v", s.Spec.Selector)
		}
		sp := started[0].ShadowPod()
		if sp.Labels["app"] != "web" || len(sp.OwnerReferences) != 1 || sp.OwnerReferences[0].Kind != "Service" {
			t.Errorf("the shadow: labels %v, owners %v; want the workload's labels and the Service as controller", sp.Labels, sp.OwnerReferences)
		}
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	w, _ := client.AppsV1().Deployments("ns").Get(context.Background(), "web", metav1.GetOptions{})
	if *w.Spec.Replicas != 2 || w.Annotations[wire.UndoAnnotation] != "" {
		t.Errorf("after: %d replicas, annotations %v; want 2 and none", *w.Spec.Replicas, w.Annotations)
	}
	if s := getService(t, client); len(s.Annotations) != 0 {
		t.Errorf("after: the Service keeps %v", s.Annotations)
	}
	if left := leftOver(t, client); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestRunRefusesBeforeChanging(t *testing.T) {
	svc, d, pods := objects()
	for _, tc := range []struct {
		name   string
		cfg    func(*Config)
		errHas string
	}{
		{"no such Service", func(c *Config) { c.Target = "svc/nope" }, "not found"},
		{"no such port", func(c *Config) { c.Expose = []target.Expose{{Local: 18080, Remote: "81"}} }, "81"},
		{"scale mode without a workload", func(c *Config) { c.Target = "svc/lonely"; c.Mode = ModeScale }, "--mode selector"},
	} {
		lonely := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lonely", Namespace: "ns"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Port: 80}}}}
		client := clustertest.New(svc.DeepCopy(), d.DeepCopy(), pods[0].DeepCopy(), lonely)
		cfg := Config{Client: client, Namespace: "ns", Target: "svc/web", SkipPortChecking: true,
			Expose: []target.Expose{{Local: 18080, Remote: "80"}}, Pod: cluster.NewPodOptions(), ErrOut: &bytes.Buffer{},
			Start: func(context.Context, session.Options) (session.Shadow, error) {
				return nil, errors.New("started a shadow")
			}}
		tc.cfg(&cfg)
		err := Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.errHas)
		}
		for _, name := range []string{"web", "lonely"} {
			if s, _ := client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{}); len(s.Annotations) != 0 {
				t.Errorf("%s: service %s changed: %v", tc.name, name, s.Annotations)
			}
		}
	}
}

// apiDown makes every request of the fake cluster fail as a stopped API server's would.
func apiDown(c *fake.Clientset) *atomic.Bool {
	var down atomic.Bool
	c.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("dial tcp 10.243.1.1:6443: connect: connection refused")
		}
		return false, nil, nil
	})
	return &down
}

// waitOutput waits until out has want.
func waitOutput(t *testing.T, out func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 10 s:\n%s", want, out())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The API server goes away and the tunnel with it: the exchange redials the same shadow, says
// so once, keeps the Service exchanged, and starts no new shadow.
func TestRunSurvivesAnAPIServerOutage(t *testing.T) {
	defer func(d time.Duration) { HeartbeatInterval = d }(HeartbeatInterval)
	HeartbeatInterval = 50 * time.Millisecond
	svc, d, pods := objects()
	client := clustertest.New(svc, d, pods[0], pods[1])
	down := apiDown(client)
	var outOf func() string
	err, out, started := exchangeOut(t, client, ModeSelector, &outOf, func(started []*sessiontest.Shadow) {
		down.Store(true)
		started[0].Break()
		time.Sleep(1500 * time.Millisecond) // many redials and heartbeats
		o := outOf()
		if n := strings.Count(o, "API server unreachable"); n != 1 {
			t.Errorf("said %d times that the API server is unreachable, want once:\n%s", n, o)
		}
		if n := strings.Count(o, "cannot refresh the exchange of service ns/web's heartbeat"); n != 1 {
			t.Errorf("said %d times that the heartbeat failed, want once:\n%s", n, o)
		}
		if started[0].Serves() < 3 {
			t.Errorf("%d dials of the same shadow during the outage, want redials", started[0].Serves())
		}
		down.Store(false)
		started[0].Mend()
		waitOutput(t, outOf, "Reconnected to the shadow after")
		waitOutput(t, outOf, "API server reachable again; the exchange of service ns/web is still in place")
		if l, ok := wire.ServiceLock(getService(t, client)); !ok || l.Role != wire.RoleExchange {
			t.Errorf("after the outage the Service is not exchanged: %+v", l)
		}
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	if len(started) != 1 {
		t.Errorf("%d shadows started, want the one that stayed", len(started))
	}
	if s := getService(t, client); !maps.Equal(s.Spec.Selector, svc.Spec.Selector) || len(s.Annotations) != 0 {
		t.Errorf("after: %v %v", s.Spec.Selector, s.Annotations)
	}
}

// The lock is gone (the shadow restored the Service while the client was away longer than its
// expiry): the client says so once and exits non-zero.
func TestRunEndsWhenTheLockIsLost(t *testing.T) {
	defer func(d time.Duration) { HeartbeatInterval = d }(HeartbeatInterval)
	HeartbeatInterval = 50 * time.Millisecond
	svc, d, pods := objects()
	client := clustertest.New(svc, d, pods[0], pods[1])
	st := &sessiontest.Starter{Client: client}
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Client: client, Namespace: "ns", Target: "web", SkipPortChecking: true,
			Expose: []target.Expose{{Local: 18080, Remote: "80"}}, RecoverWaitTime: time.Second, Pod: cluster.NewPodOptions(),
			ErrOut: out, Start: st.Start})
	}()
	waitOutput(t, out.String, "Exchanged service ns/web")
	if _, err := cluster.RestoreService(context.Background(), client, "ns", "web", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "ended while this client could not keep it") {
			t.Errorf("Run: %v, want the lost lock\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run goes on without its lock:\n%s", out.String())
	}
	if strings.Count(out.String(), "no longer locked") > 0 {
		t.Errorf("warned of the lost lock instead of ending:\n%s", out.String())
	}
	if s := getService(t, client); !maps.Equal(s.Spec.Selector, svc.Spec.Selector) || len(s.Annotations) != 0 {
		t.Errorf("after: %v %v", s.Spec.Selector, s.Annotations)
	}
}
