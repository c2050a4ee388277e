package portforward

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// upgradeServer answers every port-forward POST with a SPDY upgrade and keeps the connection;
// it records each TCP connection it accepts.
func upgradeServer(t *testing.T) (*httptest.Server, func() []net.Conn) {
	var mu sync.Mutex
	var conns []net.Conn
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "SPDY/3.1")
		w.Header().Set("X-Stream-Protocol-Version", "portforward.k8s.io")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, func() []net.Conn { mu.Lock(); defer mu.Unlock(); return append([]net.Conn(nil), conns...) }
}

func warmDialer(t *testing.T, srv *httptest.Server) *Dialer {
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDialer(cfg, client, "ns", "pod")
	t.Cleanup(func() { d.Close() })
	d.Warm(context.Background())
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		ready := d.warm != nil
		d.mu.Unlock()
		if ready {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("no warm connection")
		}
	}
}

func TestTheUpgradeTakesTheWarmConnection(t *testing.T) {
	srv, conns := upgradeServer(t)
	d := warmDialer(t, srv)
	tun, err := d.dialSPDY(d.url())
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if n := len(conns()); n != 1 {
		t.Fatalf("%d connections to the API server, want the warm one only", n)
	}
}

func TestAWarmConnectionTheServerClosedCostsADial(t *testing.T) {
	srv, conns := upgradeServer(t)
	d := warmDialer(t, srv)
	conns()[0].Close() // the API server gave up on it (its ReadHeaderTimeout)
	time.Sleep(20 * time.Millisecond)
	tun, err := d.dialSPDY(d.url())
	if err != nil {
		t.Fatalf("after the warm connection was closed: %v", err)
	}
	defer tun.Close()
	if n := len(conns()); n != 2 {
		t.Fatalf("%d connections, want the warm one and a new one", n)
	}
}

func TestCloseClosesAnUnusedWarmConnection(t *testing.T) {
	srv, _ := upgradeServer(t)
	d := warmDialer(t, srv)
	w := d.warm
	d.Close()
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("the warm connection is still open after Close")
	}
}
