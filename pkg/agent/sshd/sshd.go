// Package sshd is the agent's SSH server: public-key authentication against one key,
// direct-tcpip (the client dials into the cluster) and tcpip-forward remote forwards that
// listen on the pod's IP (cluster traffic to the pod reaches the client), with keepalives.
package sshd

import (
	"context"
	"encoding/json"
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
	// Timeout is how long a keepalive may go unanswered before the client is dropped; 0: three
	// keepalive intervals.
	Timeout time.Duration
	// Fallback maps forwarded ports to where their connections go while the client is away
	// (host:port: the original pods' Service). A port with a fallback outlives its client's
	// connection: it holds new connections until FallbackAfter has passed since the client was
	// last heard from, then relays them to the fallback ("paused"), until a connection of the
	// same client asks for the port again ("resumed"). A port without one closes with its
	// client's connection.
	Fallback      map[int]string
	FallbackAfter time.Duration
	// OnRelease, when set, is called when a client's connection ends while it still holds a
	// forwarded port (its reverse streams are as dead as it).
	OnRelease func()
}

type authedKey struct{}

// Server is the SSH server.
type Server struct {
	cfg Config
	srv *ssh.Server
	fwd *forwarder

	mu    sync.Mutex
	heard map[*gossh.ServerConn]time.Time // when each connection last answered a keepalive
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * cfg.KeepAlive
	}
	s := &Server{cfg: cfg, heard: map[*gossh.ServerConn]time.Time{}}
	fwd := &forwarder{ip: cfg.ForwardIP, ports: map[uint32]*fwdPort{}, reverse: cfg.Reverse, onConn: cfg.OnForwarded,
		fallback: cfg.Fallback, after: cfg.FallbackAfter, heard: s.lastHeard, onRelease: cfg.OnRelease}
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
			wire.ResumedRequest:    resumed,
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

// Forwarding reports whether a client's remote forward listens on port; a port paused for
// its client (see Config.Fallback) still does: it still serves, so the readiness probe that
// asks this keeps passing and the Service keeps sending its traffic here.
func (s *Server) Forwarding(port int) bool {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	return s.fwd.ports[uint32(port)] != nil
}

// Paused reports since when the forwarded ports have been relayed to their fallbacks, and
// whether they are.
func (s *Server) Paused() (since time.Time, paused bool) {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	for _, p := range s.fwd.ports {
		if p.owner == nil && !p.pauseAt.After(time.Now()) {
			return p.pauseAt, true
		}
	}
	return time.Time{}, false
}

// lastHeard is when conn last answered a keepalive (or logged in).
func (s *Server) lastHeard(conn *gossh.ServerConn) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.heard[conn]; ok {
		return t
	}
	return time.Now()
}

func (s *Server) setHeard(conn *gossh.ServerConn, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.IsZero() {
		delete(s.heard, conn)
	} else {
		s.heard[conn] = t
	}
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, ssh.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server, its connections and its forwarded ports.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.fwd.closeAll()
	return err
}

// keepAlive pings the client; a client that does not answer one within Timeout is dropped.
func (s *Server) keepAlive(ctx ssh.Context) {
	var conn *gossh.ServerConn
	for conn == nil { // set by the server right after the handshake
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		conn, _ = ctx.Value(ssh.ContextKeyConn).(*gossh.ServerConn)
	}
	s.setHeard(conn, time.Now())
	go func() { <-ctx.Done(); time.AfterFunc(time.Minute, func() { s.setHeard(conn, time.Time{}) }) }()
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
			if _, _, err := conn.SendRequest("keepalive@"+wire.Domain, true, nil); err == nil {
				s.setHeard(conn, time.Now())
			}
			close(replied)
		}()
		select {
		case <-replied:
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Timeout):
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

type resumedKey struct{}

// forwarder serves tcpip-forward: it listens on the pod's IP whatever address the client
// asked for, since the point is that cluster traffic to the pod reaches the client.
type forwarder struct {
	ip       string
	reverse  func(port int) net.Conn
	onConn   func()
	fallback map[int]string
	after    time.Duration
	heard    func(*gossh.ServerConn) time.Time
	// onRelease is called (without mu) when an owner's connection ends.
	onRelease func()

	mu    sync.Mutex
	ports map[uint32]*fwdPort
}

// fwdPort is one forwarded port: its listener and the connection it forwards to.
type fwdPort struct {
	l     net.Listener
	owner *gossh.ServerConn // nil: the client is away
	key   string            // the owner's public key
	addr  string            // the address the client asked for, echoed in forwarded-tcpip
	// While the owner is nil: from pauseAt new connections go to the fallback (relayed counts
	// them); before, they wait for a new owner. changed is closed (and replaced) when the
	// owner changes.
	pauseAt time.Time
	relayed int
	changed chan struct{}
	// conns are the open connections, true for those relayed to the fallback. When the owner
	// goes, the others are closed (their streams went with it); when a client takes the port
	// back, the relayed ones are (a caller that keeps connections open, such as the mesh
	// router's pool, would use them for the fallback for ever).
	conns map[*net.TCPConn]bool
}

// ownerChanged wakes the connections waiting for an owner; with f.mu held.
func (p *fwdPort) ownerChanged() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// closeConns closes p's connections that are relayed (or not); with f.mu held.
func (p *fwdPort) closeConns(relayed bool) {
	for c, r := range p.conns {
		if r == relayed {
			c.Close()
		}
	}
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
	if req.Type == "cancel-tcpip-forward" {
		f.cancel(conn, r.BindPort)
		return true, nil
	}
	key := ""
	if pk, ok := ctx.Value(ssh.ContextKeyPublicKey).(ssh.PublicKey); ok {
		key = string(pk.Marshal())
	}
	if took, msg := f.takeOver(ctx, conn, key, r); msg != "" {
		ctx.SetValue(lastErrKey{}, msg)
		return false, nil
	} else if took {
		go f.releaseOnEnd(ctx, conn, r.BindPort)
		return true, nil
	}
	addr := net.JoinHostPort(f.ip, strconv.Itoa(int(r.BindPort)))
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
	p := &fwdPort{l: l, owner: conn, key: key, addr: r.BindAddr, changed: make(chan struct{}), conns: map[*net.TCPConn]bool{}}
	f.mu.Lock()
	f.ports[r.BindPort] = p
	f.mu.Unlock()
	klog.Background().V(1).Info("ssh: remote forward listening", "addr", addr)
	go f.releaseOnEnd(ctx, conn, r.BindPort)
	go f.accept(p, r.BindPort)
	return true, nil
}

// takeOver gives conn the port if another connection of the same key holds it, or none does
// (paused): a client that reconnects gets its ports back without a gap. It reports whether it
// did, or why not (the port is conn's already, or another key's); neither when the port is
// free.
func (f *forwarder) takeOver(ctx ssh.Context, conn *gossh.ServerConn, key string, r forwardRequest) (took bool, refused string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.ports[r.BindPort]
	switch {
	case p == nil:
		return false, ""
	case p.owner == conn:
		return false, fmt.Sprintf("port %d: another forward already uses this port", r.BindPort)
	case p.owner != nil && p.key != key:
		return false, fmt.Sprintf("port %d: another client's forward already uses this port", r.BindPort)
	}
	if p.owner == nil && !p.pauseAt.After(time.Now()) {
		res, _ := ctx.Value(resumedKey{}).(*wire.Resumed)
		if res == nil {
			res = &wire.Resumed{}
			ctx.SetValue(resumedKey{}, res)
		}
		res.Paused, res.Relayed = max(res.Paused, time.Since(p.pauseAt)), res.Relayed+p.relayed
		klog.Background().Info("resumed: the client is back; its connections go to it again", "port", r.BindPort, "paused", time.Since(p.pauseAt).Round(100*time.Millisecond), "relayed", p.relayed)
		p.closeConns(true)
	}
	p.owner, p.key, p.addr, p.relayed = conn, key, r.BindAddr, 0
	p.ownerChanged()
	return true, ""
}

// releaseOnEnd waits for conn to end; then the port, if conn still holds it, closes, or with a
// fallback waits for its client.
func (f *forwarder) releaseOnEnd(ctx ssh.Context, conn *gossh.ServerConn, port uint32) {
	<-ctx.Done()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.ports[port]
	if p == nil || p.owner != conn {
		return
	}
	if f.onRelease != nil {
		go f.onRelease()
	}
	target := f.fallback[int(port)]
	if target == "" || f.after <= 0 {
		p.l.Close()
		delete(f.ports, port)
		return
	}
	p.owner, p.relayed = nil, 0
	p.closeConns(false)
	p.pauseAt = f.heard(conn).Add(f.after)
	p.ownerChanged()
	klog.Background().Info("the client's connection ended; its connections wait for it, then go to the fallback", "port", port, "fallback", target, "from", p.pauseAt.Format(time.RFC3339))
	go func(changed <-chan struct{}, at time.Time) {
		select {
		case <-changed:
		case <-time.After(time.Until(at)):
			klog.Background().Info("paused: the client is unreachable; its connections go to the fallback", "port", port, "fallback", target)
		}
	}(p.changed, p.pauseAt)
}

// cancel closes conn's forward on port (cancel-tcpip-forward: the client ends it itself).
func (f *forwarder) cancel(conn *gossh.ServerConn, port uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.ports[port]; p != nil && p.owner == conn {
		p.l.Close()
		delete(f.ports, port)
	}
}

func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for port, p := range f.ports {
		p.l.Close()
		delete(f.ports, port)
	}
}

// route says where a connection arriving on p now goes: to owner, or (owner nil) to the
// fallback target, or ("" and nil) nowhere; it waits while p's client is away but not yet
// for FallbackAfter.
// The connection is counted in p.conns until done is called.
func (f *forwarder) route(p *fwdPort, port uint32, c *net.TCPConn) (owner *gossh.ServerConn, addr, target string, done func()) {
	done = func() {
		f.mu.Lock()
		delete(p.conns, c)
		f.mu.Unlock()
	}
	for {
		f.mu.Lock()
		if f.ports[port] != p {
			f.mu.Unlock()
			return nil, "", "", done
		}
		if p.owner != nil {
			defer f.mu.Unlock()
			p.conns[c] = false
			return p.owner, p.addr, "", done
		}
		wait, changed := time.Until(p.pauseAt), p.changed
		if wait <= 0 {
			p.relayed++
			p.conns[c] = true
			defer f.mu.Unlock()
			return nil, "", f.fallback[int(port)], done
		}
		f.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(wait):
		}
	}
}

func (f *forwarder) accept(p *fwdPort, port uint32) {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if f.onConn != nil {
			f.onConn()
		}
		go f.forward(c.(*net.TCPConn), p, port)
	}
}

// forward sends one connection that arrived on port to the client (over a reverse stream, or
// an SSH channel), or while the client is away to the port's fallback.
func (f *forwarder) forward(c *net.TCPConn, p *fwdPort, port uint32) {
	conn, addr, target, done := f.route(p, port, c)
	defer done()
	if conn == nil {
		if target == "" {
			c.Close()
			return
		}
		tc, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			klog.Background().V(1).Info("fallback unreachable", "port", port, "fallback", target, "err", err)
			c.Close()
			return
		}
		pipe.Conns(c, tc)
		return
	}
	if f.reverse != nil {
		if rc := f.reverse(int(port)); rc != nil {
			pipe.Conns(c, rc)
			return
		}
	}
	orig := c.RemoteAddr().(*net.TCPAddr)
	payload := gossh.Marshal(&forwardedTCPPayload{
		Addr: addr, Port: port,
		OriginAddr: orig.IP.String(), OriginPort: uint32(orig.Port),
	})
	ch, reqs, err := conn.OpenChannel("forwarded-tcpip", payload)
	for try := 0; try < 5 && isRejected(err); try++ {
		// A connection that waited for its client may come right after the client's forward
		// request, before the client has set up its side of it.
		time.Sleep(50 * time.Millisecond)
		ch, reqs, err = conn.OpenChannel("forwarded-tcpip", payload)
	}
	if err != nil {
		klog.Background().V(4).Info("ssh: client refused forwarded connection", "port", port, "err", err)
		c.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	Pipe(ch, c)
}

func isRejected(err error) bool {
	var oe *gossh.OpenChannelError
	return errors.As(err, &oe)
}

func lastError(ctx ssh.Context, _ *ssh.Server, _ *gossh.Request) (bool, []byte) {
	msg, _ := ctx.Value(lastErrKey{}).(string)
	return true, []byte(msg)
}

// resumed answers ResumedRequest with what the connection's takeovers found, and forgets it.
func resumed(ctx ssh.Context, _ *ssh.Server, _ *gossh.Request) (bool, []byte) {
	res, _ := ctx.Value(resumedKey{}).(*wire.Resumed)
	if res == nil {
		res = &wire.Resumed{}
	}
	b, _ := json.Marshal(res)
	ctx.SetValue(resumedKey{}, (*wire.Resumed)(nil))
	return true, b
}
