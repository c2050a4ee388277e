// Package sshd is the agent's SSH server: public-key authentication against one key,
// direct-tcpip (the client dials into the cluster) and tcpip-forward remote forwards that
// listen on the pod's IP (cluster traffic to the pod reaches the client), with keepalives.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// LastErrorRequest returns, as its reply payload, why the connection's last tcpip-forward
// request failed. The SSH protocol's failure reply carries no message.
const LastErrorRequest = "kt-last-error@" + wire.Domain

// Config configures the server.
type Config struct {
	// AuthorizedKey is the only key allowed to log in.
	AuthorizedKey gossh.PublicKey
	// Secret is the agent's stream secret, the reply to wire.SecretRequest.
	Secret []byte
	// HostKey signs the server's side of the handshake.
	HostKey gossh.Signer
	// ForwardIP is where remote forwards listen: the pod's IP.
	ForwardIP string
	// KeepAlive is the interval of server-to-client keepalives; a client that misses three is dropped.
	KeepAlive time.Duration
	// OnConn is called for each accepted connection; the returned func when it ends.
	OnConn func() (done func())
	// Also, when set, accepts further keys (a shared shadow's other clients).
	Also func(gossh.PublicKey) bool
	// OnAuth is called once per connection that logs in, with its key; the returned func when
	// the connection ends.
	OnAuth func(gossh.PublicKey) (done func())
	// Reverse, when set, may return a stream of the client's that takes a connection arriving
	// on a forwarded port (see wire/reverse.go); nil sends it over SSH.
	Reverse func(port int) net.Conn
	// OnForwarded, when set, is called for each connection that arrives on a forwarded port.
	OnForwarded func()
}

type authedKey struct{}

// Server is the SSH server.
type Server struct {
	cfg Config
	srv *ssh.Server
	fwd *forwarder
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 10 * time.Second
	}
	s := &Server{cfg: cfg}
	fwd := &forwarder{ip: cfg.ForwardIP, listeners: map[fwdKey]net.Listener{}, reverse: cfg.Reverse, onConn: cfg.OnForwarded}
	s.fwd = fwd
	s.srv = &ssh.Server{
		Version: fmt.Sprintf("kt-shadow_%d", wire.ProtocolVersion),
		PublicKeyHandler: func(ctx ssh.Context, key ssh.PublicKey) bool {
			ok := ssh.KeysEqual(key, cfg.AuthorizedKey) || cfg.Also != nil && cfg.Also(key)
			if ok && cfg.OnAuth != nil && ctx.Value(authedKey{}) == nil {
				ctx.SetValue(authedKey{}, true)
				done := cfg.OnAuth(key)
				go func() { <-ctx.Done(); done() }()
			}
			if !ok {
				klog.Background().V(1).Info("ssh: rejected key", "remote", ctx.RemoteAddr(), "fingerprint", gossh.FingerprintSHA256(key))
			}
			return ok
		},
		ConnCallback: func(ctx ssh.Context, conn net.Conn) net.Conn {
			if cfg.OnConn != nil {
				done := cfg.OnConn()
				go func() { <-ctx.Done(); done() }()
			}
			go s.keepAlive(ctx)
			return conn
		},
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"direct-tcpip": directTCPIP,
			"session":      rejectSession,
		},
		RequestHandlers: map[string]ssh.RequestHandler{
			"tcpip-forward":        fwd.handle,
			"cancel-tcpip-forward": fwd.handle,
			LastErrorRequest:       lastError,
			wire.SecretRequest: func(ssh.Context, *ssh.Server, *gossh.Request) (bool, []byte) {
				return cfg.Secret != nil, cfg.Secret
			},
			"keepalive@openssh.com": func(ssh.Context, *ssh.Server, *gossh.Request) (bool, []byte) { return true, nil },
		},
		LocalPortForwardingCallback:   func(ssh.Context, string, uint32) bool { return true },
		ReversePortForwardingCallback: func(ssh.Context, string, uint32) bool { return true },
	}
	s.srv.AddHostKey(cfg.HostKey)
	return s
}

// Forwarding reports whether a client's remote forward listens on port.
func (s *Server) Forwarding(port int) bool {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	for key := range s.fwd.listeners {
		if int(key.port) == port {
			return true
		}
	}
	return false
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, ssh.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server and its connections.
func (s *Server) Close() error { return s.srv.Close() }

// keepAlive pings the client; a client that does not answer three pings in a row is dropped.
func (s *Server) keepAlive(ctx ssh.Context) {
	var conn gossh.Conn
	for conn == nil { // set by the server right after the handshake
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		conn, _ = ctx.Value(ssh.ContextKeyConn).(gossh.Conn)
	}
	t := time.NewTicker(s.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		replied := make(chan struct{})
		go func() {
			conn.SendRequest("keepalive@"+wire.Domain, true, nil)
			close(replied)
		}()
		select {
		case <-replied:
		case <-ctx.Done():
			return
		case <-time.After(3 * s.cfg.KeepAlive):
			klog.Background().V(1).Info("ssh: client stopped answering keepalives; closing", "remote", conn.RemoteAddr())
			conn.Close()
			return
		}
	}
}

func rejectSession(_ *ssh.Server, _ *gossh.ServerConn, ch gossh.NewChannel, _ ssh.Context) {
	ch.Reject(gossh.Prohibited, "kt shadow offers no shell: only port forwarding")
}

type directTCPIPData struct {
	DestAddr   string
	DestPort   uint32
	OriginAddr string
	OriginPort uint32
}

// directTCPIP dials the requested address and copies both ways, passing half-closes on.
func directTCPIP(_ *ssh.Server, _ *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	var d directTCPIPData
	if err := gossh.Unmarshal(nc.ExtraData(), &d); err != nil {
		nc.Reject(gossh.ConnectionFailed, "malformed direct-tcpip request: "+err.Error())
		return
	}
	addr := net.JoinHostPort(d.DestAddr, strconv.Itoa(int(d.DestPort)))
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		klog.Background().V(4).Info("ssh: direct-tcpip dial failed", "addr", addr, "err", err)
		nc.Reject(gossh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		c.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	Pipe(ch, c.(*net.TCPConn))
}

// Pipe copies between an SSH channel and a TCP connection until both directions end,
// passing each side's EOF on as a half-close.
func Pipe(ch gossh.Channel, c *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(c, ch)
		c.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		io.Copy(ch, c)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	c.Close()
}

type forwardRequest struct {
	BindAddr string
	BindPort uint32
}

type forwardedTCPPayload struct {
	Addr       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

type lastErrKey struct{}

// forwarder serves tcpip-forward: it listens on the pod's IP whatever address the client
// asked for, since the point is that cluster traffic to the pod reaches the client.
type forwarder struct {
	ip        string
	reverse   func(port int) net.Conn
	onConn    func()
	mu        sync.Mutex
	listeners map[fwdKey]net.Listener
}

// fwdKey names a remote forward: the client's connection and the port.
type fwdKey struct {
	conn *gossh.ServerConn
	port uint32
}

func (f *forwarder) handle(ctx ssh.Context, srv *ssh.Server, req *gossh.Request) (bool, []byte) {
	conn := ctx.Value(ssh.ContextKeyConn).(*gossh.ServerConn)
	var r forwardRequest
	if err := gossh.Unmarshal(req.Payload, &r); err != nil {
		ctx.SetValue(lastErrKey{}, "malformed tcpip-forward request: "+err.Error())
		return false, nil
	}
	if r.BindPort == 0 || r.BindPort > 65535 {
		ctx.SetValue(lastErrKey{}, fmt.Sprintf("port %d: remote forwards need a fixed port from 1 to 65535", r.BindPort))
		return false, nil
	}
	addr := net.JoinHostPort(f.ip, strconv.Itoa(int(r.BindPort)))
	key := fwdKey{conn, r.BindPort}
	if req.Type == "cancel-tcpip-forward" {
		f.mu.Lock()
		l, ok := f.listeners[key]
		delete(f.listeners, key)
		f.mu.Unlock()
		if ok {
			l.Close()
		}
		return true, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		msg := fmt.Sprintf("cannot listen on %s in the shadow pod: %v", addr, err)
		if errors.Is(err, syscall.EACCES) {
			msg += " (ports below 1024 need the pod's net.ipv4.ip_unprivileged_port_start sysctl or NET_BIND_SERVICE)"
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			msg += " (another forward already uses this port)"
		}
		ctx.SetValue(lastErrKey{}, msg)
		klog.Background().V(1).Info("ssh: remote forward refused", "addr", addr, "err", err)
		return false, nil
	}
	f.mu.Lock()
	f.listeners[key] = l
	f.mu.Unlock()
	klog.Background().V(1).Info("ssh: remote forward listening", "addr", addr)
	go func() {
		<-ctx.Done()
		l.Close()
		f.mu.Lock()
		delete(f.listeners, key)
		f.mu.Unlock()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if f.onConn != nil {
				f.onConn()
			}
			go func() {
				if f.reverse != nil {
					if rc := f.reverse(int(r.BindPort)); rc != nil {
						pipe.Conns(c, rc)
						return
					}
				}
				orig := c.RemoteAddr().(*net.TCPAddr)
				payload := gossh.Marshal(&forwardedTCPPayload{
					Addr: r.BindAddr, Port: r.BindPort,
					OriginAddr: orig.IP.String(), OriginPort: uint32(orig.Port),
				})
				ch, reqs, err := conn.OpenChannel("forwarded-tcpip", payload)
				if err != nil {
					klog.Background().V(4).Info("ssh: client refused forwarded connection", "port", r.BindPort, "err", err)
					c.Close()
					return
				}
				go gossh.DiscardRequests(reqs)
				Pipe(ch, c.(*net.TCPConn))
			}()
		}
	}()
	return true, nil
}

func lastError(ctx ssh.Context, _ *ssh.Server, _ *gossh.Request) (bool, []byte) {
	msg, _ := ctx.Value(lastErrKey{}).(string)
	return true, []byte(msg)
}
