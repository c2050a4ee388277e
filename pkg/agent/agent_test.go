package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestRunExpiresWithoutClient(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := gossh.NewPublicKey(pub)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch ns.svc.cluster.local\noptions ndots:5\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	err := Run(ctx, Config{AuthorizedKey: string(gossh.MarshalAuthorizedKey(sp)), ListenIP: "127.0.0.3", PodIP: "127.0.0.3",
		ExpireAfter: 1500 * time.Millisecond, ResolvConf: rc})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(t0); d < 1500*time.Millisecond || d > 5*time.Second {
		t.Errorf("expired after %s, want about 1.5s", d)
	}
}

func TestRunRejectsBadKey(t *testing.T) {
	err := Run(context.Background(), Config{AuthorizedKey: "not a key", ListenIP: "127.0.0.4"})
	if err == nil {
		t.Fatal("Run accepted a malformed key")
	}
}

func TestSharedKeySetCountsOthersOnLeave(t *testing.T) {
	gen := func() gossh.PublicKey {
		pub, _, _ := ed25519.GenerateKey(nil)
		k, _ := gossh.NewPublicKey(pub)
		return k
	}
	a, b := gen(), gen()
	s := newKeySet()
	s.add(b)
	if !s.has(b) || s.has(a) {
		t.Fatal("has: want only the added key")
	}
	doneA := s.connected(a)
	doneB := s.connected(b)
	if n := s.leave(a); n != 1 {
		t.Errorf("a leaves while b is connected: others = %d, want 1", n)
	}
	doneB()
	if n := s.leave(a); n != 0 {
		t.Errorf("a leaves, b gone: others = %d, want 0", n)
	}
	doneA()
	s.connected(a) // a returns (a reconnecting client): no longer counted as gone
	if n := s.leave(b); n != 1 {
		t.Errorf("b leaves while a is back: others = %d, want 1", n)
	}
}

// A laptop that vanished without a word leaves data connections open here (the API server
// notices late); only its SSH connection, which keepalives end, says the client is there.
func TestRunExpiresWhenOnlyDataConnectionsAreLeft(t *testing.T) {
	authorized, signer, rc := clientKey(t)
	const ip = "127.0.0.5"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan time.Time, 1)
	go func() {
		if err := Run(ctx, Config{AuthorizedKey: authorized, ListenIP: ip, PodIP: ip,
			ExpireAfter: 1500 * time.Millisecond, KeepAlive: time.Second, ResolvConf: rc}); err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- time.Now()
	}()
	dial := func(port int) net.Conn {
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
				return c
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("agent not listening on %d", port)
		return nil
	}
	// an SSH client keeps the agent for longer than ExpireAfter, data connections or not
	data := dial(wire.MuxPort)
	defer data.Close()
	sc, chans, reqs, err := gossh.NewClientConn(dial(wire.SSHPort), ip, &gossh.ClientConfig{
		User: "kt", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)}, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	go gossh.DiscardRequests(reqs) // answers the agent's keepalives
	go func() {
		for ch := range chans {
			ch.Reject(gossh.Prohibited, "")
		}
	}()
	select {
	case <-done:
		t.Fatal("the agent expired while an SSH client was connected")
	case <-time.After(3 * time.Second):
	}
	// the SSH connection ends; the data connection stays open: the agent expires anyway
	sc.Close()
	t0 := time.Now()
	select {
	case at := <-done:
		if d := at.Sub(t0); d < time.Second || d > 5*time.Second {
			t.Errorf("expired %s after the SSH client left, want about 1.5s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not expire with only a data connection left")
	}
}

// The readiness probe answers on the pod's IP whether a forward listens; /traffic, on the
// health port, how long ago a connection last came in on one.
func TestProbeAndTraffic(t *testing.T) {
	authorized, signer, rc := clientKey(t)
	const ip, probePort, fwdPort = "127.0.0.6", 2094, 18095
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go Run(ctx, Config{AuthorizedKey: authorized, ListenIP: ip, PodIP: ip, ProbePort: probePort, ResolvConf: rc})
	get := func(port int, path string) (int, string) {
		for i := 0; ; i++ {
			resp, err := http.Get(fmt.Sprintf("http://%s:%d%s", ip, port, path))
			if err != nil {
				if i == 100 {
					t.Fatalf("GET %s: %v", path, err)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
	}
	probe := fmt.Sprintf("/forwarding?port=%d", fwdPort)
	if code, _ := get(probePort, probe); code != http.StatusServiceUnavailable {
		t.Errorf("probe before the forward: %d, want 503", code)
	}
	if code, _ := get(probePort, "/forwarding?port=x"); code != http.StatusBadRequest {
		t.Errorf("probe with a bad port: %d, want 400", code)
	}
	traffic := func() time.Duration {
		_, body := get(wire.HealthPort, "/traffic")
		var tr wire.Traffic
		if err := json.Unmarshal([]byte(body), &tr); err != nil {
			t.Fatalf("/traffic: %v: %q", err, body)
		}
		return tr.SinceLastAccept
	}
	c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(wire.SSHPort)))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sshtunnel.Dial(ctx, c, signer, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	l, err := client.Listen(fwdPort)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if code, _ := get(probePort, probe); code != http.StatusOK {
		t.Errorf("probe once the forward listens: %d, want 200", code)
	}
	time.Sleep(200 * time.Millisecond)
	if d := traffic(); d < 200*time.Millisecond {
		t.Errorf("before any forwarded connection: %v since the last, want the agent's age", d)
	}
	// The agent stamps the connection when its SSH server takes it, which may be after Dial
	// returns: wait for the stamp. A stamp after dialed cannot be older than time.Since(dialed);
	// the agent's age, without one, is older by the 200ms slept above.
	dialed := time.Now()
	fc, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(fwdPort)))
	if err != nil {
		t.Fatal(err)
	}
	fc.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d := traffic()
		if d <= time.Since(dialed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a forwarded connection was not stamped: %v since the last, dialed %v ago", d, time.Since(dialed))
		}
	}
}

// clientKey returns a client's key, as the agent's authorized_keys line and as a signer, and
// a resolv.conf for the agent's DNS forwarder.
func clientKey(t *testing.T) (authorized string, signer gossh.Signer, resolvConf string) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := gossh.NewPublicKey(pub)
	signer, _ = gossh.NewSignerFromKey(priv)
	resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\n"), 0o644)
	return string(gossh.MarshalAuthorizedKey(sp)), signer, resolvConf
}

// A port-forward to the shadow is open to anyone with pods/portforward: every port but SSH
// and health takes only streams that open with the secret a logged-in client was told. A
// keyless reverse hello of a higher generation used to evict the client's reverse streams and
// take its next exchanged connection.
func TestStreamsNeedTheSessionSecret(t *testing.T) {
	authorized, signer, rc := clientKey(t)
	const ip, fwdPort = "127.0.0.7", 18096
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go Run(ctx, Config{AuthorizedKey: authorized, ListenIP: ip, PodIP: ip, ProbePort: 2097, ResolvConf: rc})
	dial := func(port int) net.Conn {
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
				return c
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("agent not listening on %d", port)
		return nil
	}
	closedWithin := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !os.IsTimeout(err)
	}
	client, err := sshtunnel.Dial(ctx, dial(wire.SSHPort), signer, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if len(client.Secret) != wire.SecretLen {
		t.Fatalf("secret of %d bytes", len(client.Secret))
	}
	// The client's reverse stream, then an attacker's hello of the highest generation.
	mine := dial(wire.ReversePort)
	mine.Write(wire.AppendAuth(nil, client.Secret))
	wire.WriteReverseHello(mine, 1)
	l, err := client.Listen(fwdPort)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, opening := range [][]byte{nil, wire.AppendAuth(nil, make([]byte, wire.SecretLen)), []byte("KTA\x01short")} {
		evil := dial(wire.ReversePort)
		evil.Write(opening)
		wire.WriteReverseHello(evil, ^uint64(0))
		if len(opening) >= len(wire.AuthMagic)+wire.SecretLen && !closedWithin(evil, 2*time.Second) {
			t.Errorf("a reverse stream opening with a wrong secret was kept")
		}
		defer evil.Close() // a short one waits for the rest, and must take nothing meanwhile
	}
	time.Sleep(100 * time.Millisecond)
	in, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(fwdPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	in.Write([]byte("GET /secret HTTP/1.0\r\n\r\n"))
	mine.SetReadDeadline(time.Now().Add(5 * time.Second))
	port, err := wire.ReadReverseGo(mine)
	if err != nil || port != fwdPort {
		t.Fatalf("the client's reverse stream did not get the connection (port %d, %v)", port, err)
	}
	// Every other authenticated port: nothing without the secret, a working stream with it.
	for _, port := range []int{wire.MuxPort, wire.MovePort, wire.DNSPort, wire.UDPRelayPort} {
		c := dial(port)
		c.Write(append(wire.AppendAuth(nil, []byte("0123456789abcdef0123456789abcdeX")), wire.RelayMagic[:]...))
		if !closedWithin(c, 2*time.Second) {
			t.Errorf("port %d kept a stream with a wrong secret", port)
		}
		c.Close()
	}
	relay := dial(wire.UDPRelayPort)
	defer relay.Close()
	relay.Write(append(wire.AppendAuth(nil, client.Secret), wire.RelayMagic[:]...))
	if closedWithin(relay, 300*time.Millisecond) {
		t.Error("the relay closed a stream with the right secret")
	}
}
