package agent

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// front serves a pod-proxy front on loopback with a pool of its own.
func front(t *testing.T) (addr string, secret []byte, pool *reversePool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	secret, pool = bytes.Repeat([]byte{7}, wire.SecretLen), &reversePool{}
	go serveProxyFront(l, secret, pool)
	return l.Addr().String(), secret, pool
}

const upgradeRequest = "GET /reverse HTTP/1.1\r\nHost: 10.0.0.1:2086\r\nConnection: Upgrade\r\nUpgrade: kt-reverse/1\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n"

// upgrade sends request and reads the answer; on a 101 it also reads the nonce.
func upgrade(t *testing.T, addr, request string) (c net.Conn, br *bufio.Reader, resp *http.Response, nonce []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the upgrade: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		nonce = make([]byte, wire.ProxyNonceLen)
		if _, err := io.ReadFull(br, nonce); err != nil {
			t.Fatalf("no nonce after the 101: %v", err)
		}
	}
	return c, br, resp, nonce
}

// pooled waits for a stream to reach the pool, and says whether one did.
func pooled(pool *reversePool, within time.Duration) net.Conn {
	for end := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if c := pool.take(8080); c != nil || time.Now().After(end) {
			return c
		}
	}
}

func TestProxyFrontTakesAStreamThatProvesTheSecret(t *testing.T) {
	addr, secret, pool := front(t)
	c, br, resp, nonce := upgrade(t, addr, upgradeRequest)
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != wire.ProxyUpgrade {
		t.Fatalf("answer %s, Upgrade %q; want 101 to %s", resp.Status, resp.Header.Get("Upgrade"), wire.ProxyUpgrade)
	}
	c.Write(wire.ProxyProof(secret, nonce))
	wire.WriteReverseHello(c, 1)
	if pooled(pool, 2*time.Second) == nil {
		t.Fatal("a stream with the right proof did not reach the pool")
	}
	if port, err := wire.ReadReverseGo(br); err != nil || port != 8080 {
		t.Errorf("the client read go %d, %v; want port 8080", port, err)
	}
}

func TestProxyFrontRefusesAWrongProofAndAReplayedOne(t *testing.T) {
	addr, secret, pool := front(t)
	c, br, _, nonce := upgrade(t, addr, upgradeRequest)
	c.Write(wire.ProxyProof([]byte("not the secret, but 32 bytes...."), nonce))
	wire.WriteReverseHello(c, 1)
	if !closed(c, br) {
		t.Error("a wrong proof kept the stream open")
	}
	// A proof seen on the wire (the API server reaches the pod over plain TCP) answers only its
	// own nonce: sent on a new stream, it is refused.
	_, _, _, first := upgrade(t, addr, upgradeRequest)
	c2, br2, _, second := upgrade(t, addr, upgradeRequest)
	if bytes.Equal(first, second) {
		t.Fatal("two streams got the same nonce")
	}
	c2.Write(wire.ProxyProof(secret, first))
	wire.WriteReverseHello(c2, 1)
	if !closed(c2, br2) {
		t.Error("a replayed proof kept the stream open")
	}
	if pooled(pool, 200*time.Millisecond) != nil {
		t.Fatal("a stream without the proof reached the pool")
	}
}

func TestProxyFrontRefusesWhatIsNotItsUpgrade(t *testing.T) {
	addr, _, pool := front(t)
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"another path", strings.Replace(upgradeRequest, "/reverse", "/", 1), http.StatusNotFound},
		{"another method", strings.Replace(upgradeRequest, "GET", "POST", 1), http.StatusMethodNotAllowed},
		{"no upgrade", strings.Replace(upgradeRequest, "Upgrade: kt-reverse/1\r\n", "", 1), http.StatusUpgradeRequired},
		{"another protocol", strings.Replace(upgradeRequest, "kt-reverse/1", "websocket", 1), http.StatusUpgradeRequired},
		{"bytes before the nonce", upgradeRequest + "KTRV", http.StatusBadRequest},
		{"a header too long", strings.Replace(upgradeRequest, "X-Forwarded-For: 10.0.0.9", "X-Pad: "+strings.Repeat("a", maxProxyRequest), 1), http.StatusBadRequest},
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n", http.StatusBadRequest},
	} {
		c, br, resp, _ := upgrade(t, addr, tc.request)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: answer %s, want %d", tc.name, resp.Status, tc.status)
		}
		if !closed(c, br) {
			t.Errorf("%s: the stream stayed open after the refusal", tc.name)
		}
	}
	if pooled(pool, 200*time.Millisecond) != nil {
		t.Fatal("a refused stream reached the pool")
	}
}

func TestProxyFrontBoundsStreamsThatSaySNothing(t *testing.T) {
	addr, _, _ := front(t)
	for range maxPending {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(100 * time.Millisecond) // the front has taken each one up
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("stream %d, beyond the %d that wait, was not closed at once: %v", maxPending+1, maxPending, err)
	}
}

// closed tells whether the front closes c within a second (what it sends before is skipped).
func closed(c net.Conn, br *bufio.Reader) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := io.Copy(io.Discard, br)
	return !isTimeout(err) // EOF, or a reset where the front left bytes unread
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
