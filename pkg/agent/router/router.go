// Package router is the agent's mesh router: it takes a Service's traffic and sends each
// request whose header matches a developer's mark to that developer's shadow, and every other
// request to the original pods. HTTP/1.1 (keep-alive, WebSocket upgrades, streaming), HTTP/2
// cleartext and gRPC are routed per request; TLS cannot be read, so it passes through to the
// original pods.
package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Router routes requests for a set of ports.
type Router struct {
	// Origin is the host of the Service that selects the original pods.
	Origin string

	mu      sync.RWMutex
	members []wire.MeshMember

	pool pool // idle HTTP/1.1 upstream connections
	// rawRequests counts the requests relayed without parsing (see serveRaw).
	rawRequests atomic.Int64
	// lastAccept is when a connection last came in on any port and sent its first byte
	// (Unix nanoseconds; the router's start before the first), which tells when kube-proxy
	// stopped sending any. A connection that sends nothing (a TCP probe) does not count.
	lastAccept atomic.Int64
	h1         *http.Transport
	h2         *http2.Transport

	mirrorMu   sync.Mutex
	mirrors    map[string]*mirror // by session
	mirrorList atomic.Pointer[[]*mirror]
}

// New returns a router that sends unmarked requests to origin.
func New(origin string) *Router {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	r := &Router{
		Origin: origin,
		h1: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			DisableCompression: true, ForceAttemptHTTP2: false},
		h2: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}},
	}
	r.lastAccept.Store(time.Now().UnixNano())
	return r
}

// SinceLastAccept is how long ago the router last accepted a connection that sent data
// (since it started, if none did).
func (r *Router) SinceLastAccept() time.Duration {
	return time.Since(time.Unix(0, r.lastAccept.Load()))
}

// SetMembers replaces the routes.
func (r *Router) SetMembers(m []wire.MeshMember) {
	r.mu.Lock()
	r.members = m
	r.mu.Unlock()
	var ms []wire.MeshMember
	for _, mm := range m {
		if mm.Mirror {
			ms = append(ms, mm)
		}
	}
	r.setMirrors(ms)
}

// Members returns the routes.
func (r *Router) Members() []wire.MeshMember {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.members
}

// backend picks where a request goes: the first member whose mark it carries, else the origin.
func (r *Router) backend(h http.Header, port int) (string, string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, m := range r.members {
		if !m.Mirror && h.Get(m.Key) == m.Value && m.Shadow != "" {
			return net.JoinHostPort(m.Shadow, strconv.Itoa(port)), m.Owner
		}
	}
	return net.JoinHostPort(r.Origin, strconv.Itoa(port)), ""
}

type transport struct{ r *Router }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ProtoMajor == 2 {
		return t.r.h2.RoundTrip(req)
	}
	return t.r.h1.RoundTrip(req)
}

// Handler returns the HTTP handler for one port (HTTP/1.1 and h2c).
func (r *Router) Handler(port int) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			host, _ := r.backend(pr.In.Header, port)
			pr.SetURL(&url.URL{Scheme: "http", Host: host})
			pr.Out.Host = pr.In.Host
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"] // leave as the client sent it
		},
		Transport: transport{r},
		// FlushInterval 0: ReverseProxy flushes at once anyway for responses of unknown length
		// (chunked, gRPC, WebSocket) and for text/event-stream; a response of known length goes
		// out in one write instead of one per header, body chunk and end.
		FlushInterval: 0,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			klog.Background().V(1).Info("router: upstream failed", "port", port, "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mirrors := r.mirrorsFor(func(n string) (string, bool) {
			v := req.Header.Values(n)
			if len(v) == 0 {
				return "", false
			}
			return v[0], true
		}, req.URL.RequestURI())
		if len(mirrors) == 0 {
			rp.ServeHTTP(w, req)
			return
		}
		if isGRPC(req) { // the client's messages copied as they come; at its end, or when it goes
			var ts taps
			for _, mr := range mirrors {
				if s := mr.startGRPCStream(req, port); s != nil {
					ts = append(ts, s)
				}
			}
			defer ts.Close()
			req.Body = &teeBody{ReadCloser: req.Body, taps: ts}
			rp.ServeHTTP(w, req)
			return
		}
		// Another request's copy goes once the client's body has ended (an upload cut at
		// MaxMirrorBody and marked), while the server may stream on, or once the exchange is
		// over when the client never ended it (what it sent). The original never waits for it.
		// ReverseProxy aborts with a panic when the client goes: hence the defer.
		var once sync.Once
		var tap *bodyTap
		offer := func() {
			once.Do(func() {
				body, cut := tap.seen()
				for _, mr := range mirrors {
					mr.offer(copyH2(req, body, cut, port))
				}
			})
		}
		tap = &bodyTap{body: req.Body, atEOF: offer}
		req.Body = tap
		defer offer()
		rp.ServeHTTP(w, req)
	})
	return h2c.NewHandler(h, &http2.Server{MaxConcurrentStreams: 250})
}

const http2Preface = "PRI * HTTP/2.0"

// Serve accepts on l: TLS connections pass through to the origin untouched, HTTP/2 with prior
// knowledge goes to net/http's server (h2c), and the rest is proxied as HTTP/1.1.
func (r *Router) Serve(ctx context.Context, l net.Listener, port int) error {
	hs := &http.Server{Handler: r.Handler(port), ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: MaxHeaderBytes}
	pl := &peekListener{Listener: l, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(pl.done)
				return
			}
			go func() {
				lim := &headLimit{r: c, left: -1}
				br := bufio.NewReader(lim)
				c.SetReadDeadline(time.Now().Add(serverFirstWait))
				b, err := br.Peek(1)
				if isTimeout(err) { // a protocol whose server speaks first, or a pooled connection
					r.lastAccept.Store(time.Now().UnixNano())
					c.SetReadDeadline(time.Time{})
					if r.serverFirst(c, br, port) {
						return
					}
					b, err = br.Peek(1) // the client spoke first after all: served as any other
				}
				if err != nil {
					c.Close() // the kubelet's TCP probe, for one: it counts as no traffic
					return
				}
				r.lastAccept.Store(time.Now().UnixNano())
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if b[0] != 0x16 && !looksHTTP(br) {
					c.SetReadDeadline(time.Time{})
					r.passthroughCopied(&peekedConn{Conn: c, r: br}, nil, port)
					return
				}
				var pre []byte
				if b[0] != 0x16 {
					pre, _ = br.Peek(len(http2Preface))
				}
				c.SetReadDeadline(time.Time{})
				if b[0] == 0x16 { // a TLS handshake record
					r.passthrough(&peekedConn{Conn: c, r: br}, nil, port)
					return
				}
				if string(pre) != http2Preface {
					r.serveH1(c, br, lim, port)
					return
				}
				select { // HTTP/2 with prior knowledge (gRPC): net/http's server
				case pl.conns <- &peekedConn{Conn: c, r: br}:
				case <-pl.done:
					c.Close()
				}
			}()
		}
	}()
	go func() { <-ctx.Done(); hs.Close() }()
	err := hs.Serve(pl)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// passthrough copies a connection to the origin byte for byte, half-closes included, on up
// when the origin is dialled already.
func (r *Router) passthrough(c, up net.Conn, port int) {
	if up == nil {
		var err error
		if up, err = net.DialTimeout("tcp", net.JoinHostPort(r.Origin, strconv.Itoa(port)), 10*time.Second); err != nil {
			c.Close()
			return
		}
	}
	pipe.Conns(c, up)
}

// serverFirst settles a connection that stayed silent for serverFirstWait. A server that speaks
// first (SMTP, MySQL) greets as soon as it is connected: the origin is dialled, and whichever
// side speaks first decides. The server: the connection is passed through, greeting included,
// and handled is true. The client (an HTTP client's pooled connection, opened ahead of need):
// the origin's connection is closed, and the caller serves the client's as any other.
func (r *Router) serverFirst(c net.Conn, br *bufio.Reader, port int) (handled bool) {
	up, err := net.DialTimeout("tcp", net.JoinHostPort(r.Origin, strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		c.Close()
		return true
	}
	client, server := make(chan error, 1), make(chan error, 1)
	go func() { _, err := br.Peek(1); client <- err }()
	ubr := bufio.NewReader(up)
	go func() { _, err := ubr.Peek(1); server <- err }()
	select {
	case err := <-server:
		if err == nil {
			r.passthroughCopied(&waitedConn{peekedConn: peekedConn{Conn: c, r: br}, peeked: client}, &peekedConn{Conn: up, r: ubr}, port)
			return true
		}
		// The origin closed without a word (an HTTP server's idle timeout): not a server that
		// speaks first; the client decides.
		up.Close()
		err = <-client
		if err != nil {
			c.Close()
		}
		return err != nil
	case err := <-client:
		up.Close()
		<-server
		if err != nil {
			c.Close()
		}
		return err != nil
	}
}

// waitedConn reads the client's side of a connection passed through after serverFirst: its
// first read waits for serverFirst's peek, which owns the reader until then.
type waitedConn struct {
	peekedConn
	peeked <-chan error
}

func (c *waitedConn) Read(p []byte) (int, error) {
	if c.peeked != nil {
		<-c.peeked
		c.peeked = nil
	}
	return c.peekedConn.Read(p)
}

// serverFirstWait is how long a new connection may stay silent before it is taken for a
// protocol whose server speaks first (SMTP, MySQL), and passed through.
const serverFirstWait = 2 * time.Second

// looksHTTP tells from the first bytes whether a connection speaks HTTP: a request line is a
// method (upper-case letters), a space, a target, a space and "HTTP/", up to the end of the
// line. A text protocol whose lines also start with an upper-case word (Redis's "SET k v",
// "HELO host") is no HTTP: it is passed through as plain TCP, as is anything else. A first
// line longer than the reader's buffer is taken for HTTP when it starts as a request line
// does (a long URL); one that does not end within the caller's read deadline is not.
func looksHTTP(br *bufio.Reader) bool {
	method := 0
	for n := 1; n <= 17 && method == 0; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return false
		}
		switch c := b[n-1]; {
		case c == ' ':
			if n == 1 {
				return false
			}
			method = n - 1
		case c < 'A' || c > 'Z':
			if c != '-' && c != '_' || n == 1 {
				return false
			}
		}
	}
	if method == 0 {
		return false
	}
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := bytes.TrimSuffix(b[:i], []byte("\r"))
			last := bytes.LastIndexByte(line, ' ')
			return last > method+1 && bytes.HasPrefix(line[last+1:], []byte("HTTP/"))
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return errors.Is(err, bufio.ErrBufferFull)
		}
	}
}

// passthroughCopied passes a connection that is not HTTP through to the origin, with a copy
// of the client's bytes for each mirror that copies every request (a filter by header or path
// cannot apply to it).
func (r *Router) passthroughCopied(c, up net.Conn, port int) {
	var all []*mirror
	if l := r.mirrorList.Load(); l != nil {
		for _, mr := range *l {
			if mr.key == "" && mr.prefix == "" {
				all = append(all, mr)
			}
		}
	}
	if len(all) == 0 {
		r.passthrough(c, up, port)
		return
	}
	ts := startStreams(all, port, nil)
	defer ts.Close()
	r.passthrough(&teeConn{Conn: c, taps: ts}, up, port)
}

type peekListener struct {
	net.Listener
	conns chan net.Conn
	done  chan struct{}
}

func (l *peekListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite passes a half-close on to the connection underneath.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// String describes the routes, for logs.
func (r *Router) String() string {
	s := fmt.Sprintf("origin %s", r.Origin)
	for _, m := range r.Members() {
		s += fmt.Sprintf("; %s=%s → %s (%s)", m.Key, m.Value, m.Shadow, m.Owner)
	}
	return s
}
