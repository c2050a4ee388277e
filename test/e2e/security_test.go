//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// portForwarder is a client of someone who may only get pods and port-forward to them in the
// test namespace: the least a colleague (or a compromised CI job) may hold.
func portForwarder(t *testing.T) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	const name = "kt-e2e-portforwarder"
	meta := metav1.ObjectMeta{Name: name, Namespace: testNamespace}
	// A run that was killed left them behind: start from none.
	client.RbacV1().RoleBindings(testNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	client.RbacV1().Roles(testNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	client.CoreV1().ServiceAccounts(testNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := client.CoreV1().ServiceAccounts(testNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.CoreV1().ServiceAccounts(testNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := client.RbacV1().Roles(testNamespace).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.RbacV1().Roles(testNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := client.RbacV1().RoleBindings(testNamespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: testNamespace}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.RbacV1().RoleBindings(testNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + testNamespace + ":" + name}
	c := kubernetes.NewForConfigOrDie(cfg)
	eventually(t, 10*time.Second, "the port-forwarder's role applies", func() error {
		_, err := c.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})
	return cfg, c
}

// TestShadowPortsNeedTheSession: someone with only pods/portforward on an exchange's shadow
// cannot take the exchanged Service's traffic (a keyless reverse hello of the highest
// generation used to evict the client's reverse streams and receive its next connection), nor
// open a tunnel stream; the exchange keeps serving the laptop.
func TestShadowPortsNeedTheSession(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	scale(t, "deploy", "web", 1)
	p := startExchange(t, "web", "--expose", "8080:80")
	eventuallyFromPod(t, "http://web/before", "echo from laptop")
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleExchange})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one exchange shadow, got %v (%v)", pods, err)
	}
	cfg, c := portForwarder(t)
	d := portforward.NewDialer(cfg, c, testNamespace, pods.Items[0].Name)
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var evil []net.Conn
	for i := 0; i < 4; i++ { // as many as the client keeps
		conn, err := d.Dial(ctx, wire.ReversePort)
		if err != nil {
			t.Fatalf("the port-forwarder could not even port-forward (the test needs it to): %v", err)
		}
		defer conn.Close()
		hello := make([]byte, 64) // more than an opening, so a refusal is at once
		copy(hello, "KTRV")
		for j := 4; j < 12; j++ {
			hello[j] = 0xff
		}
		conn.Write(hello)
		evil = append(evil, conn)
	}
	for _, port := range []uint16{wire.MuxPort, wire.DNSPort, wire.UDPRelayPort} {
		conn, err := d.Dial(ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(append([]byte{5, 1, 0, 5, 1, 0, 1, 10, 96, 0, 1, 0, 80}, make([]byte, 40)...))
		evil = append(evil, conn)
	}
	// What anyone who may read the pod sees of the client's own secret, its digest, opens nothing.
	var digest string
	for _, e := range pods.Items[0].Spec.Containers[0].Env {
		if e.Name == wire.EnvSecretDigest {
			digest = e.Value
		}
	}
	sum, err := wire.ParseSecretDigest(digest)
	if err != nil || sum == nil {
		t.Fatalf("the shadow has no secret digest (%q): %v", digest, err)
	}
	for _, opening := range [][]byte{wire.AppendAuth(nil, sum), wire.AppendAuth(nil, []byte(digest))} {
		for _, port := range []uint16{wire.MuxPort, wire.DNSPort} {
			conn, err := d.Dial(ctx, port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(append(opening, append([]byte{5, 1, 0, 5, 1, 0, 1, 10, 96, 0, 1, 0, 80}, make([]byte, 40)...)...))
			evil = append(evil, conn)
		}
	}
	// Each stream must be closed by the agent, unserved, well inside 15 s (port-forwarded
	// streams have no deadlines: one still open then is closed here and counted as served).
	type result struct {
		n    int64
		open bool
	}
	results := make([]chan result, len(evil))
	for i, conn := range evil {
		results[i] = make(chan result, 1)
		go func() {
			closed := make(chan struct{})
			timer := time.AfterFunc(15*time.Second, func() { close(closed); conn.Close() })
			n, _ := io.Copy(io.Discard, conn)
			open := !timer.Stop()
			if open {
				<-closed
			}
			results[i] <- result{n, open}
		}()
	}
	for i := range evil {
		if r := <-results[i]; r.n > 0 || r.open {
			t.Errorf("stream %d without the session's secret was served: %d bytes back, still open after 15 s: %v", i, r.n, r.open)
		}
	}
	for i := 0; i < 5; i++ {
		if r := fromPod(t, fmt.Sprintf("http://web/after-attack-%d", i)); !strings.Contains(r.Stdout, "echo from laptop") {
			t.Errorf("request %d after the attack did not reach the laptop:\n%s", i, r)
		}
	}
	if out := p.Output(); strings.Contains(out, "after-attack") && !strings.Contains(out, "Exchanged") {
		t.Errorf("exchange output:\n%s", out)
	}
	stopExchange(t, p)
}

// TestMeshRouterSurvivesOversizedHeader: a request whose head is larger than the router's
// bound gets 431 and costs the router nothing; everyone else keeps being routed.
func TestMeshRouterSurvivesOversizedHeader(t *testing.T) {
	nothingLeftBehind(t)
	scale(t, "deploy", "web", 1)
	laptopServer(t, "laptop-dev1", "127.0.0.1:8080")
	dev := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:dev1")
	eventually(t, 30*time.Second, "marked requests reach the laptop", func() error {
		if got := withHeader(t, "version: dev1", "http://web/marked"); !strings.Contains(got, "laptop-dev1") {
			return fmt.Errorf("%q", got)
		}
		return nil
	})
	// 100 KiB of header value (the router takes 64 KiB), three times.
	r := inCluster(t, `v=$(head -c 102400 /dev/zero | tr '\0' a); for i in 1 2 3; do timeout 20 wget -qO- --header "X-Big: $v" http://web/big 2>&1; echo " rc=$?"; done`)
	if strings.Count(r.Stdout, "431") < 3 {
		t.Errorf("oversized heads through the router:\n%s", r)
	}
	if got := withHeader(t, "version: dev1", "http://web/marked-after"); !strings.Contains(got, "laptop-dev1") {
		t.Errorf("marked request after the oversized heads: %q", got)
	}
	if got := withHeader(t, "", "http://web/unmarked-after"); !strings.Contains(got, "echo from web-") {
		t.Errorf("unmarked request after the oversized heads: %q", got)
	}
	pods, _ := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleRouter})
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount > 0 {
				t.Errorf("the router restarted %d times", cs.RestartCount)
			}
		}
		if lim := p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; lim.IsZero() || p.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
			t.Errorf("router pod: memory limit %s, restart policy %s", lim.String(), p.Spec.RestartPolicy)
		}
	}
	stopMesh(t, dev)
}

// TestSharedShadowNeedsTheJoinKey: someone with only pods/portforward on the shared shadow
// cannot register a key with it (the agent used to take any key POSTed to /authorize, and
// its SSH login then gave the cluster's network as the pod), nor make it count a developer
// as gone; the developer keeps working.
func TestSharedShadowNeedsTheJoinKey(t *testing.T) {
	nothingLeftBehind(t)
	ctx := context.Background()
	first := startConnect(t, "--share-shadow")
	cfg, c := portForwarder(t)
	if _, err := c.CoreV1().Secrets(testNamespace).Get(ctx, "kt-connect-shared", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the port-forwarder should not read the join key: %v", err)
	}
	d := portforward.NewDialer(cfg, c, testNamespace, "kt-connect-shared")
	defer d.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.Dial(ctx, wire.HealthPort) }}}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	evilPub, _ := gossh.NewPublicKey(pub)
	evil, _ := gossh.NewSignerFromKey(priv)
	line := gossh.MarshalAuthorizedKey(evilPub)
	guess := wire.JoinRequest{Key: string(line), Nonce: make([]byte, wire.JoinNonceLen)}
	guess.MAC = wire.RequestMAC([]byte("a guess"), wire.JoinAuthorize, guess)
	guessed, _ := json.Marshal(guess)
	for name, body := range map[string][]byte{"a bare key": line, "a join request with a guessed key": guessed} {
		for _, path := range []string{"/authorize", "/leave"} {
			resp, err := hc.Post("http://agent"+path, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatalf("the port-forwarder could not reach the health port (the test needs it to): %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s to %s without the join key was taken: %s", name, path, b)
			}
		}
	}
	conn, err := d.Dial(ctx, wire.SSHPort)
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := sshtunnel.Dial(ctx, conn, evil, time.Second, nil); err == nil {
		cl.Close()
		t.Errorf("the port-forwarder's key logs in to the shared shadow")
	}
	conn.Close()
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/after-attack"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("the developer after the attack: %s", r)
	}
	stopClean(t, first)
}
