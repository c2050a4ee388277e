package dns

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func svc(ns, name, ip string, mod ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	for _, m := range mod {
		m(s)
	}
	return s
}

// ask sends one question to n and returns the answer, or nil for ErrPass.
func ask(t *testing.T, n *Names, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	r, err := n.Exchange(context.Background(), m)
	if errors.Is(err, ErrPass) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startNames(t *testing.T, client *fake.Clientset) *Names {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n := NewNames("cluster.local")
	if err := n.Run(ctx, client, Watch{Current: "shop"}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNamesAnswersServicesLocally(t *testing.T) {
	client := fake.NewClientset([]runtime.Object{
		svc("shop", "web", "10.96.0.10"),
		svc("shop", "dual", "10.96.0.11", func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.11", "fd00::11"} }),
		svc("shop", "db", "None"),
		svc("shop", "ext", "", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
			s.Spec.ExternalName = "example.org"
		}),
		svc("other", "api", "10.96.0.20"),
	}...)
	n := startNames(t, client)
	checkNames(t, n, []nameCase{
		{"web.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"WEB.Shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"web.shop.svc", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"web.shop", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"web", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"api.other", mdns.TypeA, mdns.RcodeSuccess, []string{"10.96.0.20"}, false},
		{"web.shop.svc.cluster.local", mdns.TypeAAAA, mdns.RcodeSuccess, nil, false},
		{"dual.shop.svc.cluster.local", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"fd00::11"}, false},
		{"nope.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeNameError, nil, false},
		{"web.nowhere", mdns.TypeA, mdns.RcodeNameError, nil, false},
		// glibc's search list appended to web.other: none of it costs a round trip
		{"web.other.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeNameError, nil, false},
		{"web.other.svc.cluster.local", mdns.TypeA, mdns.RcodeNameError, nil, false},
		{"_http._tcp.web.shop.svc.cluster.local", mdns.TypeSRV, mdns.RcodeSuccess, []string{"0 100 80 web.shop.svc.cluster.local."}, false},
		{"_dns._udp.web.shop.svc.cluster.local", mdns.TypeSRV, mdns.RcodeSuccess, []string{"0 100 53 web.shop.svc.cluster.local."}, false},
		{"_http._udp.web.shop.svc.cluster.local", mdns.TypeSRV, mdns.RcodeNameError, nil, false},
		{"db.shop.svc.cluster.local", mdns.TypeA, 0, nil, true},
		{"web-0.db.shop.svc.cluster.local", mdns.TypeA, 0, nil, true},
		{"ext.shop.svc.cluster.local", mdns.TypeA, 0, nil, true},
		{"10-244-0-5.shop.pod.cluster.local", mdns.TypeA, 0, nil, true},
		{"web.shop.cluster.local", mdns.TypeA, 0, nil, true},
	})

	// The watch keeps the copy current.
	client.CoreV1().Services("shop").Create(context.Background(), svc("shop", "new", "10.96.0.30"), metav1.CreateOptions{})
	client.CoreV1().Services("shop").Delete(context.Background(), "web", metav1.DeleteOptions{})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if a, w := ask(t, n, "new.shop", mdns.TypeA), ask(t, n, "web.shop", mdns.TypeA); len(a.Answer) == 1 && w.Rcode == mdns.RcodeNameError {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("a new Service does not resolve, or a deleted one still does")
}

// nameCase is a question to Names and what it should answer.
type nameCase struct {
	q     string
	qtype uint16
	rcode int
	want  []string // the answers' data, in order; nil with pass: passed on
	pass  bool
}

// checkNames asks n each case's question and checks the answer: passed on, or authoritative
// with the rcode and the records wanted (the question's name, localTTL; an SRV answer with
// one address for each target).
func checkNames(t *testing.T, n *Names, cases []nameCase) {
	t.Helper()
	for _, tc := range cases {
		r := ask(t, n, tc.q, tc.qtype)
		if tc.pass {
			if r != nil {
				t.Errorf("%s: answered %v, want it passed on to the cluster", tc.q, r)
			}
			continue
		}
		if r == nil {
			t.Errorf("%s %s: passed on, want a local answer", tc.q, mdns.TypeToString[tc.qtype])
			continue
		}
		var got []string
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				got = append(got, rr.A.String())
			case *mdns.AAAA:
				got = append(got, rr.AAAA.String())
			case *mdns.SRV:
				got = append(got, rrData(rr))
			}
			if rr.Header().Ttl != localTTL || rr.Header().Name != mdns.Fqdn(tc.q) {
				t.Errorf("%s: record %v", tc.q, rr)
			}
		}
		if r.Rcode != tc.rcode || !r.Authoritative || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s %s: rcode %s, answers %v; want %s, %v", tc.q, mdns.TypeToString[tc.qtype], mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[tc.rcode], tc.want)
		}
		if tc.qtype == mdns.TypeSRV && r.Rcode == mdns.RcodeSuccess && len(r.Extra) != len(tc.want) {
			t.Errorf("%s: %d extra addresses, want one per target", tc.q, len(r.Extra))
		}
	}
}

func rrData(s *mdns.SRV) string {
	return mdns.Field(s, 1) + " " + mdns.Field(s, 2) + " " + mdns.Field(s, 3) + " " + mdns.Field(s, 4)
}

// Where Services may be listed only in the connected namespace, only its names are answered;
// where not at all, every name goes to the cluster as before.
func TestNamesFallsBackWhereRBACForbids(t *testing.T) {
	forbid := func(client *fake.Clientset, all bool) {
		client.PrependReactor("list", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetNamespace() == "" || all {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "", errors.New("RBAC"))
			}
			return false, nil, nil
		})
	}
	noWatch := fake.NewClientset(svc("shop", "web", "10.96.0.10"))
	noWatch.PrependWatchReactor("services", func(a k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "", errors.New("RBAC"))
	})
	if err := NewNames("cluster.local").Run(context.Background(), noWatch, Watch{Current: "shop"}); err == nil {
		t.Errorf("no error where Services may be listed but not watched")
	}
	client := fake.NewClientset(svc("shop", "web", "10.96.0.10"), svc("other", "api", "10.96.0.20"))
	forbid(client, false)
	n := startNames(t, client)
	if r := ask(t, n, "web.shop", mdns.TypeA); r == nil || len(r.Answer) != 1 {
		t.Errorf("the connected namespace's Service: %v", r)
	}
	if r := ask(t, n, "api.other", mdns.TypeA); r != nil {
		t.Errorf("a namespace not watched: answered %v, want it passed on", r)
	}
	client = fake.NewClientset(svc("shop", "web", "10.96.0.10"))
	forbid(client, true)
	n = NewNames("cluster.local")
	if err := n.Run(context.Background(), client, Watch{Current: "shop"}); err == nil {
		t.Errorf("no error where Services may not be listed")
	}
	if r := ask(t, n, "web.shop", mdns.TypeA); r != nil {
		t.Errorf("nothing watched: answered %v", r)
	}
}

func epSlice(ns, svc, name string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	pn, proto := "peer", corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc, corev1.IsHeadlessService: ""}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: &pn, Protocol: &proto, Port: &port}}}
}

func ep(ip, hostname string, ready bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if hostname != "" {
		e.Hostname = &hostname
	}
	return e
}

// A headless Service's ready pods, a StatefulSet's pods by hostname, the others by dashed
// IP, and their SRV records, all answered from the copy; a headless Service without a ready
// pod goes to the cluster.
func TestNamesAnswersHeadlessPods(t *testing.T) {
	client := fake.NewClientset(
		svc("shop", "db", "None"),
		svc("shop", "idle", "None"),
		epSlice("shop", "db", "db-a", 5432, ep("10.244.0.7", "db-0", true), ep("10.244.0.8", "db-1", true), ep("10.244.0.9", "db-2", false)),
		epSlice("shop", "db", "db-b", 5432, ep("10.244.0.10", "", true)),
		epSlice("shop", "idle", "idle-a", 80, ep("10.244.0.11", "", false)),
		// not headless: no label, no watch of it
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-a", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}},
	)
	n := startNames(t, client)
	checkNames(t, n, []nameCase{
		{"db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.244.0.7", "10.244.0.8", "10.244.0.10"}, false},
		{"db.shop", mdns.TypeA, mdns.RcodeSuccess, []string{"10.244.0.7", "10.244.0.8", "10.244.0.10"}, false},
		{"db", mdns.TypeAAAA, mdns.RcodeSuccess, nil, false},
		{"db-1.db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.244.0.8"}, false},
		{"DB-0.db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.244.0.7"}, false},
		{"10-244-0-10.db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeSuccess, []string{"10.244.0.10"}, false},
		{"db-2.db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeNameError, nil, false}, // not ready
		{"db-9.db.shop.svc.cluster.local", mdns.TypeA, mdns.RcodeNameError, nil, false},
		{"_peer._tcp.db.shop.svc.cluster.local", mdns.TypeSRV, mdns.RcodeSuccess, []string{
			"0 33 5432 db-0.db.shop.svc.cluster.local.", "0 33 5432 db-1.db.shop.svc.cluster.local.", "0 33 5432 10-244-0-10.db.shop.svc.cluster.local."}, false},
		{"_peer._udp.db.shop.svc.cluster.local", mdns.TypeSRV, mdns.RcodeNameError, nil, false},
		{"idle.shop.svc.cluster.local", mdns.TypeA, 0, nil, true},
	})

	// A pod that becomes ready resolves; a deleted slice's pods no longer do.
	client.DiscoveryV1().EndpointSlices("shop").Update(context.Background(), epSlice("shop", "idle", "idle-a", 80, ep("10.244.0.11", "", true)), metav1.UpdateOptions{})
	client.DiscoveryV1().EndpointSlices("shop").Delete(context.Background(), "db-b", metav1.DeleteOptions{})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if a, b := ask(t, n, "idle.shop", mdns.TypeA), ask(t, n, "10-244-0-10.db.shop.svc.cluster.local", mdns.TypeA); a != nil && len(a.Answer) == 1 && b != nil && b.Rcode == mdns.RcodeNameError {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the copy did not follow the EndpointSlices")
}

// Where EndpointSlices may not be watched, Services are still answered and headless ones go
// to the cluster; with NeedSlices (hosts mode) Run fails at once.
func TestNamesWithoutEndpointSlices(t *testing.T) {
	forbid := func(client *fake.Clientset) {
		client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC"))
		})
	}
	client := fake.NewClientset(svc("shop", "web", "10.96.0.10"), svc("other", "db", "None"),
		epSlice("other", "db", "db-a", 5432, ep("10.244.0.7", "db-0", true)))
	forbid(client)
	n := startNames(t, client)
	if r := ask(t, n, "web.shop", mdns.TypeA); r == nil || len(r.Answer) != 1 {
		t.Errorf("a Service: %v", r)
	}
	if r := ask(t, n, "db.other", mdns.TypeA); r != nil {
		t.Errorf("a headless Service without its slices: answered %v, want it passed on", r)
	}
	if r := ask(t, n, "nope.other", mdns.TypeA); r == nil || r.Rcode != mdns.RcodeNameError {
		t.Errorf("a Service that does not exist: %v", r)
	}
	client = fake.NewClientset(svc("shop", "web", "10.96.0.10"))
	forbid(client)
	t0 := time.Now()
	err := NewNames("cluster.local").Run(context.Background(), client, Watch{Current: "shop", Namespaces: []string{"shop", "other"}, NeedSlices: true})
	if !apierrors.IsForbidden(err) || time.Since(t0) > 5*time.Second {
		t.Errorf("NeedSlices: %v after %s, want forbidden at once", err, time.Since(t0))
	}
}
