package session

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// proxySession is a session on a fake API server whose pod proxy answers as the shadow's
// front does when allow says so, and 403 otherwise; every port-forward is refused. proxied
// counts the streams the proxy was asked for.
func proxySession(t *testing.T, secret []byte, allow bool) (s *Session, proxied *atomic.Int64, out *bytes.Buffer) {
	t.Helper()
	proxied = &atomic.Int64{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/pods/shadow:2086/proxy/reverse") {
			http.Error(w, "no port-forward here", http.StatusBadRequest)
			return
		}
		proxied.Add(1)
		if !allow {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}`)
			return
		}
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		nonce := bytes.Repeat([]byte{3}, wire.ProxyNonceLen)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+wire.ProxyUpgrade+"\r\n\r\n")
		c.Write(nonce)
		proof := make([]byte, 32)
		if _, err := io.ReadFull(c, proof); err != nil || !bytes.Equal(proof, wire.ProxyProof(secret, nonce)) {
			c.Close()
			return
		}
		t.Cleanup(func() { c.Close() })
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shadow", Namespace: "ns"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Env: []corev1.EnvVar{{Name: wire.EnvProxyPort, Value: "2086"}}}}}}
	d := portforward.NewDialer(cfg, client, "ns", "shadow")
	d.Timeout = 2 * time.Second
	t.Cleanup(func() { d.Close() })
	s = &Session{Pod: pod, Dialer: d, own: bytes.Repeat([]byte{9}, 32), opts: Options{Namespace: "ns"},
		proxyDials: rate.NewLimiter(proxyDialRate, proxyDialBurst)}
	out = &bytes.Buffer{}
	return s, proxied, out
}

func TestDialReverseBoundsTheHandshakesThroughTheProxy(t *testing.T) {
	secret := bytes.Repeat([]byte{5}, 32)
	s, proxied, out := proxySession(t, secret, true)
	s.proxyDials = rate.NewLimiter(rate.Every(time.Hour), proxyDialBurst) // no refill while the test runs, however slow
	w := &warner{w: out}
	via := 0
	for range proxyDialBurst + 2 {
		c, viaProxy, err := s.dialReverse(context.Background(), secret, w)
		if viaProxy {
			via++
			c.Close()
		} else if err == nil {
			t.Fatal("a port-forward stream on a server that refuses them")
		}
	}
	if via != proxyDialBurst || proxied.Load() != proxyDialBurst {
		t.Errorf("%d streams through the proxy (%d asked), want the burst of %d and then the port-forward", via, proxied.Load(), proxyDialBurst)
	}
	if out.Len() != 0 {
		t.Errorf("a bound reached is not a refusal, yet it said %q", out)
	}
}

func TestDialReverseKeepsToThePortForwardOnceRefused(t *testing.T) {
	s, proxied, out := proxySession(t, nil, false)
	w := &warner{w: out}
	for range 3 {
		if _, viaProxy, _ := s.dialReverse(context.Background(), nil, w); viaProxy {
			t.Fatal("a refused proxy gave a stream")
		}
	}
	if proxied.Load() != 1 {
		t.Errorf("the proxy was asked %d times after refusing, want once", proxied.Load())
	}
	if got := out.String(); strings.Count(got, "note:") != 1 || !strings.Contains(got, "403") || !strings.Contains(got, "grant pods/proxy") {
		t.Errorf("want one note with the refusal and how to fix it, got %q", got)
	}
}

// A shadow that replaces a lost one is a new session: the note on the pod proxy is said once
// for the command's sessions when they share a Said, and once for each session otherwise.
func TestThePodProxyNoteIsSaidOnce(t *testing.T) {
	for _, c := range []struct {
		said *Said
		want int
	}{{&Said{}, 1}, {nil, 2}} {
		var out bytes.Buffer
		w := &warner{w: &out}
		for range 2 { // the first shadow, then its replacement
			s := &Session{opts: Options{Said: c.said}}
			s.usedProxy(w)
			s.usedProxy(w)
		}
		if n := strings.Count(out.String(), "pod proxy"); n != c.want {
			t.Errorf("shared %v: said %d times, want %d:\n%s", c.said != nil, n, c.want, out.String())
		}
	}
}
