package portforward

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// fakeProxy stands in for the API server's pod proxy: it checks the request and, when the
// credentials are right, hands the connection to serve after a 101.
func fakeProxy(t *testing.T, serve func(io.ReadWriter)) *Dialer {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p:2086\" is forbidden: User \"u\" cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}`)
			return
		}
		if r.URL.Path != "/api/v1/namespaces/ns/pods/p:2086/proxy/reverse" || r.Method != http.MethodGet ||
			r.Header.Get("Upgrade") != "kt-reverse/1" || !strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: kt-reverse/1\r\n\r\nnonce")
		serve(c)
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL, BearerToken: "tok", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return NewDialer(cfg, client, "ns", "p")
}

func TestDialProxyUpgradesAndKeepsWhatFollowsTheAnswer(t *testing.T) {
	d := fakeProxy(t, func(c io.ReadWriter) { io.Copy(c, c) })
	c, err := d.DialProxy(context.Background(), 2086, "/reverse", "kt-reverse/1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "nonce" {
		t.Fatalf("read %q, %v; want the bytes sent with the 101", b, err)
	}
	io.WriteString(c, "echo")
	if _, err := io.ReadFull(c, b[:4]); err != nil || string(b[:4]) != "echo" {
		t.Errorf("read %q, %v through the upgraded connection", b[:4], err)
	}
}

func TestDialProxyTellsARefusal(t *testing.T) {
	d := fakeProxy(t, func(io.ReadWriter) {})
	d.config.BearerToken = "someone else"
	_, err := d.DialProxy(context.Background(), 2086, "/reverse", "kt-reverse/1")
	var refused *ProxyRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), `cannot get resource "pods/proxy"`) {
		t.Fatalf("got %v, want a ProxyRefusedError with the API server's message", err)
	}
	d.config.BearerToken = "tok"
	_, err = d.DialProxy(context.Background(), 2086, "/reverse", "websocket")
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "400") {
		t.Fatalf("an upgrade the pod does not speak: %v, want a ProxyRefusedError with the 400", err)
	}
}
