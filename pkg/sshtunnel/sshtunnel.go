// Package sshtunnel is the client side of the agent's SSH server: it runs SSH over any
// net.Conn (a port-forward stream), dials into the cluster with direct-tcpip, listens with
// remote forwards, and keeps the connection alive.
package sshtunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// LastErrorRequest asks the agent why the last remote forward failed.
const LastErrorRequest = "kt-last-error@" + wire.Domain

// Client is an SSH connection to the agent.
type Client struct {
	*gossh.Client
	// Secret opens every stream to the agent's other ports (wire.Authenticated).
	Secret   []byte
	done     chan struct{}
	closeErr error
	once     sync.Once
}

// HostKey pins an agent's host key: the first handshake learns it, every later one (a
// reconnect to the same pod) must show the same key, or the pod is not the agent it was.
type HostKey struct {
	mu  sync.Mutex
	key gossh.PublicKey
}

// Pin sets the key every handshake must show, learnt from a source the client trusts (a shared
// shadow's answer under its join key) before the first one.
func (h *HostKey) Pin(key gossh.PublicKey) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key = key
}

func (h *HostKey) check(_ string, _ net.Addr, key gossh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == nil {
		h.key = key
		return nil
	}
	if string(h.key.Marshal()) != string(key.Marshal()) {
		return fmt.Errorf("the shadow's host key changed (%s, was %s): the pod is not the agent this session talked to", gossh.FingerprintSHA256(key), gossh.FingerprintSHA256(h.key))
	}
	return nil
}

// CheckVersion checks the agent's SSH identification string: a kt shadow of this protocol.
func CheckVersion(sv string) error {
	if !strings.HasPrefix(sv, wire.SSHServerVersion) {
		return fmt.Errorf("the pod does not run a kt shadow agent (SSH version %q)", sv)
	}
	if want := fmt.Sprintf("%s_%d", wire.SSHServerVersion, wire.ProtocolVersion); sv != want {
		return fmt.Errorf("the shadow speaks %q but this client needs %q; use the shadow image of this client's version (leave --image out)", sv, want)
	}
	return nil
}

// Dial runs the SSH handshake over conn. The transport is already authenticated (TLS to the
// API server, then a port-forward into one named pod), so the agent's per-pod host key is
// taken on first use and pinned in pin (nil: not checked); the server's version string must
// be the agent's.
func Dial(ctx context.Context, conn net.Conn, signer gossh.Signer, keepAlive time.Duration, pin *HostKey) (*Client, error) {
	cfg := &gossh.ClientConfig{
		User:            "kt",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         15 * time.Second,
	}
	if pin != nil {
		cfg.HostKeyCallback = pin.check
	}
	type result struct {
		c     gossh.Conn
		chans <-chan gossh.NewChannel
		reqs  <-chan *gossh.Request
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		c, chans, reqs, err := gossh.NewClientConn(conn, "kt-shadow", cfg)
		ch <- result{c, chans, reqs, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		conn.Close()
		return nil, ctx.Err()
	case <-time.After(cfg.Timeout):
		conn.Close()
		return nil, fmt.Errorf("ssh handshake with the shadow timed out after %s", cfg.Timeout)
	}
	if r.err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh handshake with the shadow: %w", r.err)
	}
	if err := CheckVersion(string(r.c.ServerVersion())); err != nil {
		r.c.Close()
		return nil, err
	}
	c := &Client{Client: gossh.NewClient(r.c, r.chans, r.reqs), done: make(chan struct{})}
	if ok, secret, err := c.SendRequest(wire.SecretRequest, true, nil); err != nil || !ok || len(secret) != wire.SecretLen {
		c.Close()
		return nil, fmt.Errorf("the shadow agent did not give its stream secret (ok %v, %d bytes, %v)", ok, len(secret), err)
	} else {
		c.Secret = secret
	}
	go func() {
		c.closeErr = c.Client.Wait()
		c.once.Do(func() { close(c.done) })
	}()
	if keepAlive > 0 {
		go c.keepAlive(keepAlive)
	}
	return c, nil
}

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.done }

func (c *Client) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		replied := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			replied <- err
		}()
		select {
		case err := <-replied:
			if err != nil {
				c.Close()
				return
			}
		case <-c.done:
			return
		case <-time.After(3 * every):
			c.Close()
			return
		}
	}
}

// DialContext opens a TCP connection from the pod to addr (direct-tcpip).
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.Client.DialContext(ctx, network, addr)
}

// Listen asks the agent to listen on port of the pod's IP and returns the connections that
// arrive there. A refusal says why (port in use, privileged port).
func (c *Client) Listen(port int) (net.Listener, error) {
	l, err := c.Client.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
	if err == nil {
		return l, nil
	}
	_, msg, rerr := c.SendRequest(LastErrorRequest, true, nil)
	if rerr == nil && len(msg) > 0 {
		return nil, errors.New(string(msg))
	}
	return nil, fmt.Errorf("the shadow refused to listen on port %d: %w", port, err)
}

// ReadVersion reads the server's SSH identification string, which a server sends first
// (RFC 4253 4.2: lines before it that do not start with "SSH-" are skipped; each is at most
// 255 bytes). Until ctx ends; conn is closed then.
func ReadVersion(ctx context.Context, conn net.Conn) (string, error) {
	type result struct {
		v   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r := bufio.NewReaderSize(conn, 256)
		for range 16 {
			line, err := r.ReadSlice('\n')
			if err != nil {
				ch <- result{"", fmt.Errorf("read the agent's SSH version: %w", err)}
				return
			}
			if l := strings.TrimRight(string(line), "\r\n"); strings.HasPrefix(l, "SSH-") {
				ch <- result{l, nil}
				return
			}
		}
		ch <- result{"", fmt.Errorf("no SSH version from the agent")}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		conn.Close()
		return "", ctx.Err()
	}
}
