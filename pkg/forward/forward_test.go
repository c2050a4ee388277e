package forward

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

func TestServicePort(t *testing.T) {
	svc := func(ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: ports}}
	}
	http := corev1.ServicePort{Name: "http", Port: 80}
	admin := corev1.ServicePort{Name: "admin", Port: 81, Protocol: corev1.ProtocolTCP}
	dns := corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}
	dnsTCP := corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		remote string
		want   int32  // the port picked, or 0 for an error
		errHas string // a part of the error
	}{
		{"the only port", svc(http), "", 80, ""},
		{"the only TCP port beside a UDP one", svc(http, dns), "", 80, ""},
		{"several TCP ports", svc(http, admin, dns), "", 0, "several TCP ports (http 80/TCP, admin 81/TCP, dns 53/UDP); name one"},
		{"no TCP port", svc(dns), "", 0, "no TCP port (dns 53/UDP)"},
		{"by number", svc(http, admin), "81", 81, ""},
		{"by name", svc(http, admin), "admin", 81, ""},
		{"a number both UDP and TCP", svc(dns, dnsTCP), "53", 53, ""},
		{"a UDP port", svc(http, dns), "dns", 0, "port dns is UDP; forward carries TCP only"},
		{"no such port", svc(http, dns), "8080", 0, `no port "8080"; its ports: http 80/TCP, dns 53/UDP`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := servicePort(tc.svc, tc.remote)
			switch {
			case tc.want != 0 && (err != nil || p.Port != tc.want || protocol(*p) != corev1.ProtocolTCP):
				t.Errorf("got %v, %v; want TCP port %d", p, err, tc.want)
			case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Errorf("got %v, %v; want an error with %q", p, err, tc.errHas)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	labels := map[string]string{"app": "web"}
	tmpl := corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Ports: []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}}
	two := corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}},
		{Name: "b", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9000}}}}}
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "ns"} }
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: meta("web"), Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}}},
		&corev1.Service{ObjectMeta: meta("ext"), Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
		&appsv1.Deployment{ObjectMeta: meta("web"), Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{Spec: tmpl}}},
		&appsv1.StatefulSet{ObjectMeta: meta("db"), Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{Spec: two}}},
		&corev1.Pod{ObjectMeta: meta("bare"), Spec: two},
	)
	for _, tc := range []struct {
		target, remote string
		what, selector string // want, for a success
		local, onPod   int    // want: the local port, and the port on a pod of tmpl
		errHas         string // want, for an error
	}{
		{target: "svc/web", what: "service ns/web", selector: "app=web", local: 80, onPod: 8080},
		{target: "web", remote: "80", what: "service ns/web", selector: "app=web", local: 80, onPod: 8080},
		{target: "deploy/web", what: "deployment ns/web", selector: "app=web", local: 8080, onPod: 8080},
		{target: "deployment/web", remote: "http", what: "deployment ns/web", selector: "app=web", local: 8080, onPod: 8080},
		{target: "deploy/web", remote: "9999", what: "deployment ns/web", selector: "app=web", local: 9999, onPod: 9999},
		{target: "sts/db", remote: "admin", what: "statefulset ns/db", selector: "app=db", local: 9000, onPod: 9000},
		{target: "pod/bare", remote: "8080", what: "pod ns/bare", local: 8080, onPod: 8080},
		{target: "deploy/web", remote: "dns", errHas: `deployment ns/web has no TCP port named "dns"; it declares http 8080/TCP, dns 53/UDP`},
		{target: "sts/db", errHas: "statefulset ns/db declares 8080/TCP, admin 9000/TCP; name the port to forward to"},
		{target: "pod/bare", remote: "70000", errHas: "port 70000 is not a number from 1 to 65535"},
		{target: "pod/gone", errHas: "pod ns/gone not found; check the name and -n/--namespace"},
		{target: "deploy/gone", errHas: "deployment ns/gone not found"},
		{target: "svc/ext", errHas: "selects no pods; forward to one of its addresses as HOST:PORT"},
		{target: "job/x", errHas: `"job/x": forward takes svc/NAME, deploy/NAME, sts/NAME, pod/NAME`},
		{target: "pod/", errHas: `"pod/": forward takes`},
	} {
		t.Run(tc.target+" "+tc.remote, func(t *testing.T) {
			src, err := resolve(context.Background(), Config{Client: client, Namespace: "ns", Target: tc.target})
			var port *podPort
			if err == nil {
				port, err = src.portOf(tc.remote)
			}
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("got %v; want an error with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sel := ""
			if src.selector != nil {
				sel = src.selector.String()
			}
			if src.what != tc.what || sel != tc.selector || port.local != tc.local {
				t.Errorf("got %q, selector %q, local port %d; want %q, %q, %d", src.what, sel, port.local, tc.what, tc.selector, tc.local)
			}
			pod := &corev1.Pod{Spec: tmpl}
			if port, err := port.on(pod); err != nil || int(port) != tc.onPod {
				t.Errorf("port on a pod: %d, %v; want %d", port, err, tc.onPod)
			}
		})
	}
}
