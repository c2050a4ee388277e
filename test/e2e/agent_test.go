//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/tunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// socksHTTP returns an HTTP client whose connections go through the agent's flow server (mux
// sessions of SOCKS5 CONNECTs), as connect's and forward's do; host names are resolved in the pod.
func socksHTTP(t *testing.T, s *session.Session) *http.Client {
	t.Helper()
	d := &tunnel.Dialer{Agent: func() tunnel.PortDialer { return s }}
	t.Cleanup(d.Close)
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) { return d.DialHost(ctx, addr) }
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: dial}}
}

func TestAgentSOCKS(t *testing.T) {
	nothingLeftBehind(t)
	s := startSession(t, portforward.ProtocolAuto, wire.RoleConnect)
	svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := socksHTTP(t, s)
	for _, url := range []string{
		"http://" + svc.Spec.ClusterIP + "/by-cluster-ip",
		"http://web." + testNamespace + ".svc.cluster.local/by-fqdn",
		"http://web/by-short-name", // the pod's search list resolves it
	} {
		resp, err := hc.Get(url)
		if err != nil {
			t.Errorf("GET %s through SOCKS: %v", url, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "echo from web-") {
			t.Errorf("GET %s: %q", url, b)
		}
	}
	if _, err := hc.Get("http://no-such-service/"); err == nil {
		t.Error("GET of an unknown name succeeded")
	}
}

// dnsQuery sends one query to the agent's DNS forwarder over the tunnel.
func dnsQuery(t *testing.T, s *session.Session, name string, qtype uint16) *dns.Msg {
	t.Helper()
	conn, err := s.Dial(context.Background(), wire.DNSPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &dns.Conn{Conn: conn}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if err := c.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReadMsg()
	if err != nil {
		t.Fatalf("DNS %s: %v", name, err)
	}
	return r
}

func TestAgentDNS(t *testing.T) {
	nothingLeftBehind(t)
	s := startSession(t, portforward.ProtocolAuto, wire.RoleConnect)
	svc, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	db0, err := client.CoreV1().Pods(testNamespace).Get(context.Background(), "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  string
	}{
		{"web", dns.TypeA, dns.RcodeSuccess, svc.Spec.ClusterIP},
		{"web." + testNamespace, dns.TypeA, dns.RcodeSuccess, svc.Spec.ClusterIP},
		{"web." + testNamespace + ".svc.cluster.local", dns.TypeA, dns.RcodeSuccess, svc.Spec.ClusterIP},
		{"db-0.db." + testNamespace + ".svc.cluster.local", dns.TypeA, dns.RcodeSuccess, db0.Status.PodIP},
		{"db-0.db", dns.TypeA, dns.RcodeSuccess, db0.Status.PodIP},
		{"web", dns.TypeAAAA, dns.RcodeSuccess, ""}, // IPv4-only: empty NOERROR
		{"_http._tcp.web." + testNamespace + ".svc.cluster.local", dns.TypeSRV, dns.RcodeSuccess, "web." + testNamespace + ".svc.cluster.local."},
		{"nope-nothing", dns.TypeA, dns.RcodeNameError, ""},
	} {
		r := dnsQuery(t, s, c.name, c.qtype)
		if r.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
			continue
		}
		if c.want == "" {
			if len(r.Answer) != 0 {
				t.Errorf("%s %s: want no answers, got %v", c.name, dns.TypeToString[c.qtype], r.Answer)
			}
			continue
		}
		found := false
		for _, rr := range r.Answer {
			if strings.Contains(rr.String(), c.want) && strings.EqualFold(rr.Header().Name, dns.Fqdn(c.name)) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %s: answers %v lack %s for the name asked", c.name, dns.TypeToString[c.qtype], r.Answer, c.want)
		}
	}
	// PTR of the ClusterIP
	ip := netip.MustParseAddr(svc.Spec.ClusterIP).As4()
	rev := fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa", ip[3], ip[2], ip[1], ip[0])
	if r := dnsQuery(t, s, rev, dns.TypePTR); len(r.Answer) == 0 || !strings.Contains(r.Answer[0].String(), "web."+testNamespace) {
		t.Errorf("PTR %s: %v", rev, r.Answer)
	}
}

func TestAgentUDPRelay(t *testing.T) {
	nothingLeftBehind(t)
	s := startSession(t, portforward.ProtocolAuto, wire.RoleConnect)
	svc, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	conn, err := s.Dial(context.Background(), wire.UDPRelayPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(wire.RelayMagic[:])
	dst := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 9090)
	b, _ := wire.AppendFrame(nil, wire.Frame{Type: wire.FrameDatagram, Addr: dst, Payload: []byte("ping")})
	conn.Write(b)
	type res struct {
		f   wire.Frame
		err error
	}
	ch := make(chan res, 1)
	go func() { f, err := wire.ReadFrame(conn, nil); ch <- res{f, err} }()
	select {
	case r := <-ch:
		if r.err != nil || !strings.HasPrefix(string(r.f.Payload), "udp-echo web-") || !strings.HasSuffix(string(r.f.Payload), ": ping") {
			t.Errorf("relay reply %q, %v", r.f.Payload, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no UDP reply through the relay")
	}
	// DNS over UDP through the relay, to the cluster's DNS service
	q := new(dns.Msg)
	q.SetQuestion("web."+testNamespace+".svc.cluster.local.", dns.TypeA)
	qb, _ := q.Pack()
	b, _ = wire.AppendFrame(nil, wire.Frame{Type: wire.FrameDatagram, Addr: netip.MustParseAddrPort("10.96.0.10:53"), Payload: qb})
	conn.Write(b)
	go func() { f, err := wire.ReadFrame(conn, nil); ch <- res{f, err} }()
	select {
	case r := <-ch:
		m := new(dns.Msg)
		if r.err != nil || m.Unpack(r.f.Payload) != nil || len(m.Answer) == 0 || !strings.Contains(m.Answer[0].String(), svc.Spec.ClusterIP) {
			t.Errorf("DNS over the UDP relay: %v %v", m.Answer, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DNS reply through the relay")
	}
}

func TestAgentRemoteForward(t *testing.T) {
	nothingLeftBehind(t)
	s := startSession(t, portforward.ProtocolAuto, wire.RoleExchange)
	sc, err := s.SSH(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l, err := sc.Listen(8080)
	if err != nil {
		t.Fatalf("remote forward: %v", err)
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the laptop: %s\n", r.URL.Path)
	})}
	go srv.Serve(l)
	defer srv.Close()
	r := inCluster(t, fmt.Sprintf("timeout 10 wget -qO- http://%s:8080/from-a-pod", s.Pod.Status.PodIP))
	if r.Code != 0 || !strings.Contains(r.Stdout, "hello from the laptop: /from-a-pod") {
		t.Errorf("request from a client pod through the remote forward:\n%s", r)
	}
	// the same port twice: a clear refusal
	if _, err := sc.Listen(8080); err == nil || !strings.Contains(err.Error(), "8080") {
		t.Errorf("second forward on 8080: %v", err)
	}
}
