package sshd_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/kubectl-kt/kt/pkg/agent/sshd"
	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

func signer(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// server starts the SSH server on loopback for the key of client.
func server(t *testing.T, client gossh.Signer) string {
	addr, _ := serverWith(t, client, nil)
	return addr
}

// serverWith is server with onForwarded set, and returns the server too.
func serverWith(t *testing.T, client gossh.Signer, onForwarded func()) (string, *sshd.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := sshd.New(sshd.Config{AuthorizedKey: client.PublicKey(), HostKey: signer(t), Secret: make([]byte, wire.SecretLen), ForwardIP: "127.0.0.1", KeepAlive: time.Second, OnForwarded: onForwarded})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv
}

func dial(t *testing.T, addr string, key gossh.Signer) (*sshtunnel.Client, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return sshtunnel.Dial(context.Background(), c, key, time.Second, nil)
}

// echoServer answers with what it read, then half-closes after the client's EOF.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b, _ := io.ReadAll(c) // until the client's half-close
				c.Write(append([]byte("got:"), b...))
				c.Close()
			}()
		}
	}()
	return l.Addr().String()
}

func TestDirectTCPIPHalfClose(t *testing.T) {
	key := signer(t)
	c, err := dial(t, server(t, key), key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := c.DialContext(context.Background(), "tcp", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	conn.(interface{ CloseWrite() error }).CloseWrite()
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "got:hello" {
		t.Errorf("read %q, %v; want the echo after half-close", b, err)
	}
}

func TestDirectTCPIPRefused(t *testing.T) {
	key := signer(t)
	c, err := dial(t, server(t, key), key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.DialContext(context.Background(), "tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial closed port: %v, want connection refused", err)
	}
}

func TestWrongKeyRejected(t *testing.T) {
	addr := server(t, signer(t))
	if _, err := dial(t, addr, signer(t)); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("login with another key: %v", err)
	}
}

func TestRemoteForward(t *testing.T) {
	key := signer(t)
	var forwarded atomic.Int32
	addr, srv := serverWith(t, key, func() { forwarded.Add(1) })
	c, err := dial(t, addr, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := freePort(t)
	if srv.Forwarding(port) {
		t.Errorf("Forwarding(%d) before the client asked for it", port)
	}
	l, err := c.Listen(port)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if !srv.Forwarding(port) || srv.Forwarding(port+1) {
		t.Errorf("Forwarding(%d) = %v, Forwarding(%d) = %v; want true, false", port, srv.Forwarding(port), port+1, srv.Forwarding(port+1))
	}
	laptopAt(l, "laptop")
	if got := fromCluster(t, port); got != "laptop:hello" {
		t.Errorf("through the remote forward: %q", got)
	}
	if n := forwarded.Load(); n != 1 {
		t.Errorf("OnForwarded called %d times for one connection", n)
	}
	// the same port again is refused with a reason
	if _, err := c.Listen(port); err == nil || !strings.Contains(err.Error(), "already uses this port") {
		t.Errorf("second Listen on %d: %v, want a clear in-use error", port, err)
	}
	// closing the listener frees the port
	l.Close()
	time.Sleep(100 * time.Millisecond)
	if _, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		t.Errorf("port %d still listens after the forward was cancelled", port)
	}
	if srv.Forwarding(port) {
		t.Errorf("Forwarding(%d) after the forward was cancelled", port)
	}
}

func TestSessionRefused(t *testing.T) {
	key := signer(t)
	c, err := dial(t, server(t, key), key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.NewSession(); err == nil || !strings.Contains(err.Error(), "no shell") {
		t.Errorf("NewSession: %v, want refusal", err)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// laptopAt serves l as a client's forward would: each connection gets name and what it sent.
func laptopAt(l net.Listener, name string) {
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 5)
				io.ReadFull(conn, b)
				conn.Write(append([]byte(name+":"), b...))
				conn.Close()
			}()
		}
	}()
}

// fromCluster connects to the pod's port as an in-cluster caller and returns the answer.
func fromCluster(t *testing.T, port int) string {
	t.Helper()
	cc, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer cc.Close()
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	cc.Write([]byte("hello"))
	b, _ := io.ReadAll(cc)
	return string(b)
}

func resumedOf(t *testing.T, c *sshtunnel.Client) wire.Resumed {
	t.Helper()
	ok, b, err := c.SendRequest(wire.ResumedRequest, true, nil)
	var r wire.Resumed
	if err != nil || !ok || json.Unmarshal(b, &r) != nil {
		t.Fatalf("%s: %v %v %q", wire.ResumedRequest, ok, err, b)
	}
	return r
}

// TestForwardFallbackAndResume: a port with a fallback outlives its client's connection. A
// connection that arrives while the client is away waits for it and reaches it if it is back
// within FallbackAfter; later ones go to the fallback (paused); the client's next connection
// takes the port back (resumed) and hears how long it was paused. Another key cannot take it.
func TestForwardFallbackAndResume(t *testing.T) {
	key, other := signer(t), signer(t)
	port := freePort(t)
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	laptopAt(origin, "origin")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := sshd.New(sshd.Config{AuthorizedKey: key.PublicKey(), Also: func(k gossh.PublicKey) bool { return string(k.Marshal()) == string(other.PublicKey().Marshal()) },
		HostKey: signer(t), Secret: make([]byte, wire.SecretLen), ForwardIP: "127.0.0.1", KeepAlive: 200 * time.Millisecond,
		Fallback: map[int]string{port: origin.Addr().String()}, FallbackAfter: time.Second})
	go srv.Serve(l)
	defer srv.Close()
	addr := l.Addr().String()
	listen := func(name string, key gossh.Signer) *sshtunnel.Client {
		t.Helper()
		c, err := dial(t, addr, key)
		if err != nil {
			t.Fatal(err)
		}
		fl, err := c.Listen(port)
		if err != nil {
			t.Fatalf("%s: Listen: %v", name, err)
		}
		laptopAt(fl, name)
		return c
	}
	c1 := listen("laptop1", key)
	if got := fromCluster(t, port); got != "laptop1:hello" {
		t.Fatalf("first client: %q", got)
	}
	// The client drops; a caller waits, and reaches the client that is back within a second.
	c1.Close()
	time.Sleep(100 * time.Millisecond)
	held := make(chan string, 1)
	go func() { held <- fromCluster(t, port) }()
	time.Sleep(200 * time.Millisecond)
	c2 := listen("laptop2", key)
	if got := <-held; got != "laptop2:hello" {
		t.Errorf("a caller during a short absence: %q, want the client that came back", got)
	}
	if r := resumedOf(t, c2); r.Paused != 0 || r.Relayed != 0 {
		t.Errorf("a short absence reported as a pause: %+v", r)
	}
	// Away longer than FallbackAfter: callers go to the fallback.
	c2.Close()
	time.Sleep(1500 * time.Millisecond)
	if _, paused := srv.Paused(); !paused || !srv.Forwarding(port) {
		t.Errorf("Paused() = %v, Forwarding = %v after the client was gone 1.5s", paused, srv.Forwarding(port))
	}
	for i := 0; i < 2; i++ {
		if got := fromCluster(t, port); got != "origin:hello" {
			t.Errorf("a caller while paused: %q, want the fallback", got)
		}
	}
	// A connection kept open to the fallback (a pooling caller's) is closed on the resume.
	kept, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	kept.Write([]byte("he"))
	time.Sleep(100 * time.Millisecond)
	// Another key cannot take the port.
	oc, err := dial(t, addr, other)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	c3 := listen("laptop3", key)
	defer c3.Close()
	if r := resumedOf(t, c3); r.Paused < 500*time.Millisecond || r.Relayed != 3 {
		t.Errorf("resumed after a pause: %+v, want about 0.5s and 3 relayed", r)
	}
	kept.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := kept.Read(make([]byte, 10)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection relayed to the fallback stays open after the resume (read %d, %v)", n, err)
	}
	if got := fromCluster(t, port); got != "laptop3:hello" {
		t.Errorf("after the client came back: %q", got)
	}
	if _, err := oc.Listen(port); err == nil || !strings.Contains(err.Error(), "another client") {
		t.Errorf("another key's Listen on a held port: %v, want a refusal", err)
	}
	if _, paused := srv.Paused(); paused || !srv.Forwarding(port) {
		t.Errorf("Paused() = %v, Forwarding = %v after the resume", paused, srv.Forwarding(port))
	}
}

// TestForwardWithoutFallbackCloses: a port without a fallback closes with its client.
func TestForwardWithoutFallbackCloses(t *testing.T) {
	key := signer(t)
	c, err := dial(t, server(t, key), key)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	if _, err := c.Listen(port); err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(200 * time.Millisecond)
	if got := fromCluster(t, port); !strings.HasPrefix(got, "dial:") {
		t.Errorf("after its client left, the port answered %q", got)
	}
}
