// Package portforward dials ports of a pod through the API server's port-forward
// subresource and hands each stream out as a net.Conn. One tunnel (WebSocket, or SPDY where
// the server or a proxy refuses WebSocket) carries many connections; a dropped tunnel is
// redialled on the next Dial.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/klog/v2"
)

// Protocol selects the tunnel protocol.
type Protocol string

// Protocols.
const (
	ProtocolAuto      Protocol = ""          // WebSocket, falling back to SPDY
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
	conn      httpstream.Connection
	protocol  string // negotiated
	requestID atomic.Int64
	closed    bool
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

// connection returns the current tunnel, dialling a new one when there is none or the old one closed.
func (d *Dialer) connection(ctx context.Context) (httpstream.Connection, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, net.ErrClosed
	}
	if d.conn != nil {
		select {
		case <-d.conn.CloseChan():
			klog.FromContext(ctx).V(1).Info("port-forward tunnel closed; redialling", "pod", d.Namespace+"/"+d.Pod)
			d.conn = nil
		default:
			return d.conn, nil
		}
	}
	type result struct {
		conn  httpstream.Connection
		proto string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		c, p, err := d.dial()
		ch <- result{c, p, err}
	}()
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("port-forward to pod %s/%s: %w", d.Namespace, d.Pod, r.err)
		}
		d.conn, d.protocol = r.conn, r.proto
		klog.FromContext(ctx).V(2).Info("port-forward tunnel up", "pod", d.Namespace+"/"+d.Pod, "protocol", r.proto)
		return d.conn, nil
	case <-t.C:
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("port-forward to pod %s/%s: no tunnel after %s; raise --port-forward-timeout or check that the API server allows pods/portforward", d.Namespace, d.Pod, timeout)
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (d *Dialer) dial() (httpstream.Connection, string, error) {
	u := d.client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(d.Namespace).Name(d.Pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(d.config)
	if err != nil {
		return nil, "", err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	if d.Protocol != ProtocolSPDY {
		ws, err := portforward.NewSPDYOverWebsocketDialer(u, d.config)
		if err != nil {
			return nil, "", err
		}
		conn, _, err := ws.Dial(portforward.PortForwardProtocolV1Name)
		if err == nil {
			return conn, string(ProtocolWebSocket), nil
		}
		// Fall back as client-go's FallbackDialer does: only when the server or a proxy
		// refused the upgrade, not on every error.
		if d.Protocol == ProtocolWebSocket || !(httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)) {
			return nil, "", err
		}
	}
	conn, _, err := spdyDialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, "", err
	}
	return conn, string(ProtocolSPDY), nil
}

// Dial opens a connection to port of the pod.
func (d *Dialer) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	conn, err := d.connection(ctx)
	if err != nil {
		return nil, err
	}
	c, err := d.openStreams(conn, port)
	if err != nil {
		// A tunnel that can no longer create streams is dead: drop it and retry once.
		conn.Close()
		d.mu.Lock()
		if d.conn == conn {
			d.conn = nil
		}
		d.mu.Unlock()
		if conn, err = d.connection(ctx); err != nil {
			return nil, err
		}
		return d.openStreams(conn, port)
	}
	return c, nil
}

func (d *Dialer) openStreams(conn httpstream.Connection, port uint16) (net.Conn, error) {
	id := strconv.FormatInt(d.requestID.Add(1), 10)
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	headers.Set(corev1.PortForwardRequestIDHeader, id)
	errStream, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: create error stream: %w", d.Namespace, d.Pod, port, err)
	}
	errStream.Close() // nothing is written to it
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		conn.RemoveStreams(errStream)
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: create data stream: %w", d.Namespace, d.Pod, port, err)
	}
	c := &Conn{
		data: data, errStream: errStream, conn: conn, errc: make(chan error, 1),
		local:  addr(fmt.Sprintf("port-forward/%s", id)),
		remote: addr(fmt.Sprintf("%s/%s:%d", d.Namespace, d.Pod, port)),
	}
	go func() {
		msg, err := io.ReadAll(errStream)
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
	if d.conn != nil {
		return d.conn.Close()
	}
	return nil
}

type addr string

func (a addr) Network() string { return "portforward" }
func (a addr) String() string  { return string(a) }

// Conn is one port-forwarded connection. CloseWrite half-closes it. Deadlines are not
// supported by the underlying streams: the Set*Deadline methods are no-ops.
type Conn struct {
	data, errStream httpstream.Stream
	conn            httpstream.Connection
	errc            chan error
	local, remote   net.Addr
	closeOnce       sync.Once
}

// Read reads from the pod. When the pod side failed (for instance nothing listens on the
// port), the error carries the kubelet's message.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err == io.EOF && n == 0 {
		select {
		case e, ok := <-c.errc:
			if ok && e != nil {
				return 0, fmt.Errorf("port-forward %s: %w", c.remote, e)
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) { return c.data.Write(p) }

// CloseWrite tells the pod side that no more data follows.
func (c *Conn) CloseWrite() error { return c.data.Close() }

// Close discards unsent data and releases the streams.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.data.Reset()
		c.errStream.Reset()
		c.conn.RemoveStreams(c.data, c.errStream)
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return c.local }
func (c *Conn) RemoteAddr() net.Addr               { return c.remote }
func (c *Conn) SetDeadline(t time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(t time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { return nil }
