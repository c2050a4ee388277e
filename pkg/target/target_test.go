package target

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestParseExpose(t *testing.T) {
	got, err := ParseExpose("8080:80, 9090,7000:http")
	if err != nil || len(got) != 3 || got[0] != (Expose{8080, "80"}) || got[1] != (Expose{9090, "9090"}) || got[2] != (Expose{7000, "http"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "8080:80:1", "abc", "0", "70000", "8080:70000", "8080:", "9090,9090"} {
		if _, err := ParseExpose(bad); err == nil {
			t.Errorf("ParseExpose(%q) accepted", bad)
		}
	}
}

func TestMapPorts(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
		{Name: "admin", Port: 81, TargetPort: intstr.FromInt32(8081)},
		{Name: "plain", Port: 82},
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
	}}}
	svc.Name = "s"
	w := &Workload{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}}}}
	for _, c := range []struct {
		remote string
		target int32
		name   string
	}{
		{"80", 8080, "web"}, {"http", 8080, "web"}, {"web", 8080, "web"},
		{"81", 8081, ""}, {"8081", 8081, ""}, {"admin", 8081, ""}, {"82", 82, ""},
	} {
		pm, warn, err := MapPorts(svc, w, []Expose{{Local: 9000, Remote: c.remote}})
		if err != nil || len(pm) != 1 || pm[0].Target != c.target || pm[0].Name != c.name || pm[0].Local != 9000 {
			t.Errorf("remote %s: %+v, %v", c.remote, pm, err)
		}
		if len(warn) != 3 {
			t.Errorf("remote %s: %d warnings for the ports left out, want 3", c.remote, len(warn))
		}
	}
	if _, _, err := MapPorts(svc, w, []Expose{{9000, "999"}}); err == nil || !strings.Contains(err.Error(), "its ports are") {
		t.Errorf("unknown port: %v", err)
	}
	if _, _, err := MapPorts(svc, w, []Expose{{9000, "53"}}); err == nil || !strings.Contains(err.Error(), "port 53 of service s is UDP; kt carries TCP only") {
		t.Errorf("UDP port: %v", err)
	}
	dns := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}}}}
	if pm, _, err := MapPorts(dns, nil, []Expose{{5353, "53"}}); err != nil || len(pm) != 1 || pm[0].Target != 53 {
		t.Errorf("53 of a Service with 53/UDP before 53/TCP: %+v, %v", pm, err)
	}
	if _, _, err := MapPorts(svc, nil, []Expose{{9000, "80"}}); err == nil || !strings.Contains(err.Error(), "named port") {
		t.Errorf("named port without a workload: %v", err)
	}
}

// A Service kt cannot take the traffic of is refused with what it is, for every command.
func TestResolveRefusesServicesWithoutPods(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "ns"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: "ns"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
	)
	for name, want := range map[string]string{
		"ext":    `service ns/ext is an ExternalName Service (a DNS name for "db.example.com")`,
		"manual": "service ns/manual has no selector (its endpoints are managed by hand): kt can only take the traffic of a Service that selects pods",
	} {
		_, err := Resolve(context.Background(), client, "ns", name)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "exchange") {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
}

// ReadyPods counts the pods that answer a Service: ready, not terminating, not kt's own, by
// the Service's original selector while kt has redirected it.
func TestReadyPods(t *testing.T) {
	pod := func(name string, ready bool, mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"}}}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		if mod != nil {
			mod(p)
		}
		return p
	}
	now := metav1.Now()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	redirected := svc.DeepCopy()
	redirected.Spec.Selector = map[string]string{wire.ExchangeLabel: "s1"}
	redirected.Annotations = map[string]string{wire.UndoAnnotation: `{"selector":{"app":"web"}}`}
	for _, c := range []struct {
		name string
		svc  *corev1.Service
		pods []runtime.Object
		want int
	}{
		{"none", svc, nil, 0},
		{"not ready", svc, []runtime.Object{pod("a", false, nil)}, 0},
		{"terminating", svc, []runtime.Object{pod("a", true, func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} })}, 0},
		{"kt's shadow with the labels", svc, []runtime.Object{pod("a", true, func(p *corev1.Pod) { p.Labels[wire.RoleLabel] = wire.RoleMesh })}, 0},
		{"another app", svc, []runtime.Object{pod("a", true, func(p *corev1.Pod) { p.Labels["app"] = "db" })}, 0},
		{"two ready of three", svc, []runtime.Object{pod("a", true, nil), pod("b", true, nil), pod("c", false, nil)}, 2},
		{"redirected by kt", redirected, []runtime.Object{pod("a", true, nil)}, 1},
	} {
		n, err := ReadyPods(context.Background(), fake.NewClientset(c.pods...), c.svc)
		if err != nil || n != c.want {
			t.Errorf("%s: %d, %v; want %d", c.name, n, err, c.want)
		}
	}
}
