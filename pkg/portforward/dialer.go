// Package portforward dials ports of a pod through the API server's port-forward
// subresource and hands each stream out as a net.Conn. One tunnel (SPDY, or WebSocket where
// the server or a proxy refuses SPDY) carries many connections; a dropped tunnel is
// redialled on the next Dial.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	pfconstants "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/websocket"
	"k8s.io/klog/v2"
)

// Protocol selects the tunnel protocol.
type Protocol string

// Protocols.
const (
	ProtocolAuto      Protocol = ""          // SPDY, falling back to WebSocket
	ProtocolWebSocket Protocol = "websocket" // WebSocket only
	ProtocolSPDY      Protocol = "spdy"      // SPDY only
)

// Dialer opens connections to ports of one pod. It is safe for concurrent use.
type Dialer struct {
	Namespace, Pod string
	Protocol       Protocol
	// Timeout bounds establishing the tunnel (not a single stream).
	Timeout time.Duration

	config *rest.Config
	client kubernetes.Interface

	mu        sync.Mutex
	tun       tunnel
	dialing   *dialCall                      // the tunnel being dialled, which other callers wait for
	dialFunc  func() (tunnel, string, error) // d.dial; tests replace it
	protocol  string                         // negotiated
	requestID atomic.Int64
	closed    bool
	warm      *warmConn // dialled ahead by Warm, for the first upgrade
}

// warmConn is a connection to the API server with nothing sent on it yet.
type warmConn struct {
	net.Conn
	at time.Time
}

// warmFor is how long a warm connection is used: the API server closes a connection that sends
// no request within its ReadHeaderTimeout (32 s), and a pod that takes longer to start is not
// waiting on round trips.
const warmFor = 20 * time.Second

// Warm dials the API server (TCP and TLS) in the background, while the pod starts, so that the
// first Dial sends its upgrade on a connection that is already up: over a slow link two round
// trips fewer before the tunnel. Only without a proxy and for the SPDY upgrade; Close closes it
// if it was never used.
func (d *Dialer) Warm(ctx context.Context) {
	if d.Protocol == ProtocolWebSocket {
		return
	}
	u := d.url()
	if p, err := d.proxy()(&http.Request{URL: u}); err != nil || p != nil {
		return
	}
	tlsConfig, err := rest.TLSConfigFor(d.config)
	if err != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := dialDirect(ctx, u, tlsConfig)
		if err != nil {
			klog.FromContext(ctx).V(3).Info("port-forward: no warm connection", "err", err)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed || d.warm != nil || d.tun != nil {
			c.Close()
			return
		}
		d.warm = &warmConn{c, time.Now()}
	}()
}

// takeWarm returns the warm connection, if there is a fresh one, for the caller to use.
func (d *Dialer) takeWarm() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.warm
	d.warm = nil
	if w == nil {
		return nil
	}
	if time.Since(w.at) > warmFor {
		w.Close()
		return nil
	}
	return w.Conn
}

// dialCall is one attempt to establish the tunnel; done closes when err is set.
type dialCall struct {
	done   chan struct{}
	err    error
	gaveUp bool // the dialling caller's ctx ended: the others try again themselves
}

// tunnel is one connection to the kubelet's port-forward server: kt's own SPDY session, on a
// plain SPDY upgrade or inside the API server's WebSocket tunnel.
type tunnel interface {
	open(ctx context.Context, port uint16, requestID string) (data, errs stream, err error)
	alive() bool
	Close() error
}

// stream is one direction pair of a port-forward stream.
type stream interface {
	io.ReadWriter
	CloseWrite() error // FIN
	Close() error      // drop what is unread and release the stream
}

// NewDialer returns a Dialer for ns/pod.
func NewDialer(config *rest.Config, client kubernetes.Interface, ns, pod string) *Dialer {
	return &Dialer{Namespace: ns, Pod: pod, config: config, client: client, Timeout: 10 * time.Second}
}

// Tunnel reports the negotiated tunnel protocol, or "" before the first Dial.
func (d *Dialer) Tunnel() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.protocol
}

// connection returns the current tunnel, dialling a new one when there is none or the old one
// closed. One caller dials; the others wait for it, each only as long as its own ctx allows,
// and share its result.
func (d *Dialer) connection(ctx context.Context) (tunnel, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, net.ErrClosed
		}
		if d.tun != nil {
			if d.tun.alive() {
				t := d.tun
				d.mu.Unlock()
				return t, nil
			}
			klog.FromContext(ctx).V(1).Info("port-forward tunnel closed; redialling", "pod", d.Namespace+"/"+d.Pod)
			d.tun = nil
		}
		if call := d.dialing; call != nil {
			d.mu.Unlock()
			select {
			case <-call.done:
				if call.err != nil && !call.gaveUp {
					return nil, call.err
				}
				continue // the new tunnel, unless it already failed
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		call := &dialCall{done: make(chan struct{})}
		d.dialing = call
		d.mu.Unlock()
		t, proto, err := d.dialTimeout(ctx)
		d.mu.Lock()
		d.dialing = nil
		if err == nil && d.closed {
			t.Close()
			err = net.ErrClosed
		}
		if err == nil {
			d.tun, d.protocol = t, proto
			klog.FromContext(ctx).V(2).Info("port-forward tunnel up", "pod", d.Namespace+"/"+d.Pod, "protocol", proto)
		}
		call.err, call.gaveUp = err, err != nil && ctx.Err() != nil
		d.mu.Unlock()
		close(call.done)
		return t, err
	}
}

// dialTimeout dials the tunnel within d.Timeout and ctx; a dial that finishes after either
// is closed.
func (d *Dialer) dialTimeout(ctx context.Context) (tunnel, string, error) {
	type result struct {
		tun   tunnel
		proto string
		err   error
	}
	ch := make(chan result, 1)
	dial := d.dialFunc
	if dial == nil {
		dial = d.dial
	}
	go func() {
		t, p, err := dial()
		ch <- result{t, p, err}
	}()
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	late := func() {
		go func() {
			if r := <-ch; r.tun != nil {
				r.tun.Close()
			}
		}()
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, "", fmt.Errorf("port-forward to pod %s/%s: %w", d.Namespace, d.Pod, r.err)
		}
		return r.tun, r.proto, nil
	case <-t.C:
		late()
		return nil, "", fmt.Errorf("port-forward to pod %s/%s: no tunnel after %s; raise --port-forward-timeout or check that the API server allows pods/portforward", d.Namespace, d.Pod, timeout)
	case <-ctx.Done():
		late()
		return nil, "", ctx.Err()
	}
}

// url is the pod's port-forward subresource.
func (d *Dialer) url() *url.URL {
	return d.client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(d.Namespace).Name(d.Pod).SubResource("portforward").URL()
}

// proxy is the proxy the config names, else the environment's.
func (d *Dialer) proxy() func(*http.Request) (*url.URL, error) {
	if d.config.Proxy != nil {
		return d.config.Proxy
	}
	return http.ProxyFromEnvironment
}

func (d *Dialer) dial() (tunnel, string, error) {
	u := d.url()
	if d.Protocol != ProtocolWebSocket {
		t, err := d.dialSPDY(u)
		if err == nil {
			return t, string(ProtocolSPDY), nil
		}
		// Fall back as client-go's FallbackDialer does: only when the server or a proxy
		// refused the upgrade, not on every error.
		if d.Protocol == ProtocolSPDY || !(httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)) {
			return nil, "", err
		}
		klog.Background().V(1).Info("port-forward: SPDY refused; trying WebSocket", "pod", d.Namespace+"/"+d.Pod, "err", err)
	}
	t, err := d.dialWebSocket(u)
	if err != nil {
		return nil, "", err
	}
	return t, string(ProtocolWebSocket), nil
}

// dialWebSocket opens the API server's WebSocket tunnel, as client-go's
// NewSPDYOverWebsocketDialer does, and runs kt's SPDY session over it.
func (d *Dialer) dialWebSocket(u *url.URL) (tunnel, error) {
	rt, holder, err := websocket.RoundTripperFor(d.config)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil) // WebSocket requires GET (RFC 6455 4.1)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.Negotiate(rt, holder, req, pfconstants.WebsocketsSPDYTunnelingPrefix+portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, err
	}
	return newSession(portforward.NewTunnelingConnection("client", ws))
}

// Dial opens a connection to port of the pod.
func (d *Dialer) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	tun, err := d.connection(ctx)
	if err != nil {
		return nil, err
	}
	c, err := d.open(ctx, tun, port)
	if err != nil && ctx.Err() != nil {
		return nil, err // the caller gave up; the tunnel may be fine
	}
	if err != nil {
		// A tunnel that can no longer create streams is dead: drop it and retry once.
		tun.Close()
		d.mu.Lock()
		if d.tun == tun {
			d.tun = nil
		}
		d.mu.Unlock()
		if tun, err = d.connection(ctx); err != nil {
			return nil, err
		}
		return d.open(ctx, tun, port)
	}
	return c, nil
}

func (d *Dialer) open(ctx context.Context, tun tunnel, port uint16) (net.Conn, error) {
	id := strconv.FormatInt(d.requestID.Add(1), 10)
	data, errs, err := tun.open(ctx, port, id)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w", d.Namespace, d.Pod, port, err)
	}
	c := &Conn{
		data: data, errs: errs, errc: make(chan error, 1),
		local:  addr(fmt.Sprintf("port-forward/%s", id)),
		remote: addr(fmt.Sprintf("%s/%s:%d", d.Namespace, d.Pod, port)),
	}
	go func() {
		msg, err := io.ReadAll(errs)
		switch {
		case err != nil:
			c.errc <- err
		case len(msg) > 0:
			c.errc <- errors.New(string(msg))
		}
		close(c.errc)
	}()
	return c, nil
}

// Close closes the tunnel; open connections end with it.
func (d *Dialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.warm != nil {
		d.warm.Close()
		d.warm = nil
	}
	if d.tun != nil {
		return d.tun.Close()
	}
	return nil
}

type addr string

func (a addr) Network() string { return "portforward" }
func (a addr) String() string  { return string(a) }

// Conn is one port-forwarded connection. CloseWrite half-closes it. Deadlines are not
// supported by the underlying streams: the Set*Deadline methods are no-ops.
type Conn struct {
	data, errs    stream
	errc          chan error
	local, remote net.Addr
	closeOnce     sync.Once
}

// Read reads from the pod. When the pod side failed (for instance nothing listens on the
// port), the error carries the kubelet's message.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err != nil && n == 0 {
		err = c.why(err)
	}
	return n, err
}

// WriteTo copies what the pod sends to w, without a copy of its own where the stream allows.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	wt, ok := c.data.(io.WriterTo)
	if !ok {
		return io.Copy(w, struct{ io.Reader }{c})
	}
	n, err := wt.WriteTo(w)
	if n == 0 {
		if err == nil {
			err = io.EOF
		}
		if err = c.why(err); err == io.EOF {
			err = nil
		}
	}
	return n, err
}

// why replaces the end of a stream that carried nothing with the kubelet's message, if it
// sent one.
func (c *Conn) why(err error) error {
	select {
	case e, ok := <-c.errc:
		if ok && e != nil {
			return fmt.Errorf("port-forward %s: %w", c.remote, e)
		}
	case <-time.After(50 * time.Millisecond):
	}
	return err
}

func (c *Conn) Write(p []byte) (int, error) { return c.data.Write(p) }

// CloseWrite tells the pod side that no more data follows.
func (c *Conn) CloseWrite() error { return c.data.CloseWrite() }

// Close discards unsent data and releases the streams.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.data.Close()
		c.errs.Close()
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return c.local }
func (c *Conn) RemoteAddr() net.Addr               { return c.remote }
func (c *Conn) SetDeadline(t time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(t time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { return nil }
