package sshd_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
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
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 5)
				io.ReadFull(conn, b)
				conn.Write(append([]byte("laptop:"), b...))
				conn.Close()
			}()
		}
	}()
	// a "cluster" client connects to the pod's port
	cc, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	cc.Write([]byte("hello"))
	b, _ := io.ReadAll(cc)
	if string(b) != "laptop:hello" {
		t.Errorf("through the remote forward: %q", b)
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
