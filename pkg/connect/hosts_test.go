package connect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// countingAdmin writes the hosts file as root would, and counts the writes.
type countingAdmin struct {
	netadmin.Direct
	writes atomic.Int32
}

func (a *countingAdmin) WriteHostsBlock(path string, e []dns.HostEntry) error {
	a.writes.Add(1)
	return a.Direct.WriteHostsBlock(path, e)
}

func TestHostsBlockFromTheWatches(t *testing.T) {
	host := "web-0"
	objs := []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "api"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "unlisted", Name: "x"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.30"}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "db", corev1.IsHeadlessService: ""}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.7"}, Hostname: &host}}},
	}
	client := fake.NewClientset(objs...)
	path := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(path, []byte("127.0.0.1 localhost\n"), 0o644)
	admin := &countingAdmin{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &hostsWriter{client: client, admin: admin, path: path, namespaces: []string{"shop", "other"}, current: "shop", domain: "cluster.local"}
	if err := h.start(ctx); err != nil {
		t.Fatal(err)
	}
	go h.run(ctx)
	b, _ := os.ReadFile(path)
	for _, want := range []string{
		"127.0.0.1 localhost\n",
		"10.96.0.10\tweb web.shop web.shop.svc.cluster.local\n",
		"10.96.0.20\tapi.other api.other.svc.cluster.local\n",
		"10.244.0.7\tdb db.shop db.shop.svc.cluster.local web-0.db", // the headless Service's name, and its pod's
		"web-0.db web-0.db.shop web-0.db.shop.svc.cluster.local",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("no %q in\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "x.unlisted") {
		t.Errorf("a namespace not asked for is in the block:\n%s", b)
	}

	// A burst of 50 new Services is one write, soon after.
	before := admin.writes.Load()
	for i := range 50 {
		client.CoreV1().Services("other").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: fmt.Sprintf("new%d", i)},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.1.%d", i)}}, metav1.CreateOptions{})
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), "new49.other") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(hostsMaxWait + 200*time.Millisecond)
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "10.96.1.49\tnew49.other") {
		t.Fatalf("the new Services are not in the block:\n%s", b)
	}
	if n := admin.writes.Load() - before; n < 1 || n > 2 {
		t.Errorf("a burst of 50 Services took %d writes, want one (two if it straddled the debounce)", n)
	}
}

func TestHostsRefusedAtOnce(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC"))
	})
	h := &hostsWriter{client: client, admin: &countingAdmin{}, path: filepath.Join(t.TempDir(), "hosts"), namespaces: []string{"shop"}, current: "shop", domain: "cluster.local"}
	t0 := time.Now()
	if err := h.start(context.Background()); !apierrors.IsForbidden(err) || time.Since(t0) > 5*time.Second {
		t.Errorf("start: %v after %s, want forbidden at once", err, time.Since(t0))
	}
}
