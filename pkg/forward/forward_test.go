package forward

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
