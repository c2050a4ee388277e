package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// HTTP/1.1 is proxied on the client connection's own goroutine, with upstream connections
// taken from a shared pool for each request and put back as soon as the response is read. A
// request so costs no hand-over between goroutines (http.Transport's read and write loops),
// which on an idle node is most of a proxy's added latency. Headers pass as the client sent them.

const (
	idleTimeout = 5 * time.Minute
	// A response up to this size is read whole, so that its upstream connection is free for
	// the next request before the client has it; a larger or open-ended one is streamed.
	maxBuffered = 64 << 10
)

type upstream struct {
	addr string
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	used bool      // a request went through: an error on the next one may be a stale connection
	idle time.Time // when it went back to the pool
}

// Idle upstream connections are kept for the next client connection, so that a client that
// opens a connection per request does not cost a new upstream connection per request too.
const (
	maxIdlePerBackend = 64
	maxIdleTime       = 30 * time.Second // below common servers' keep-alive timeouts
)

type pool struct {
	mu   sync.Mutex
	idle map[string][]*upstream
}

func (p *pool) get(addr string) *upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := p.idle[addr]; len(l) > 0; l = p.idle[addr] {
		u := l[len(l)-1]
		p.idle[addr] = l[:len(l)-1]
		if time.Since(u.idle) < maxIdleTime && u.open() {
			return u
		}
		u.close()
	}
	return nil
}

func (p *pool) put(u *upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*upstream{}
	}
	l := p.idle[u.addr]
	if len(l) >= maxIdlePerBackend {
		l[0].close()
		l = l[1:]
	}
	u.idle = time.Now()
	p.idle[u.addr] = append(l, u)
}

func (u *upstream) close() { u.conn.Close() }

// open tells, without waiting, whether an idle connection is still open: the server may have
// closed it meanwhile (its keep-alive timeout).
func (u *upstream) open() bool { return u.r.Buffered() == 0 && connAlive(u.conn) }

// A request's head (request line and headers) is bounded before it is parsed, as net/http's
// server bounds it: 126 MiB of header lines once grew the router's heap by 134 MiB, and a
// router that runs out of memory leaves the Service with no endpoint.
const (
	MaxHeaderBytes = 64 << 10 // request line and headers, in bytes
	MaxHeaders     = 256      // header fields
)

var errHeadTooLarge = errors.New("request head too large")

// headLimit is the reader under a client connection's bufio.Reader: while left >= 0, it
// gives at most left more bytes, then errHeadTooLarge.
type headLimit struct {
	r    io.Reader
	left int64
}

func (h *headLimit) Read(p []byte) (int, error) {
	if h.left < 0 {
		return h.r.Read(p)
	}
	if h.left == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= int64(n)
	return n, err
}

// serveH1 serves one client connection whose first bytes are in br, which reads through lim.
func (r *Router) serveH1(c net.Conn, br *bufio.Reader, lim *headLimit, port int) {
	defer c.Close()
	bw := bufio.NewWriterSize(c, 16<<10)
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		if handled, keep := r.serveRaw(br, bw, port); handled { // a head within br's buffer
			if !keep {
				return
			}
			continue
		}
		lim.left = MaxHeaderBytes // what br holds already is at most its 4 KiB buffer
		req, err := http.ReadRequest(br)
		lim.left = -1 // the body is bounded by its framing, not here
		c.SetReadDeadline(time.Time{})
		if err == nil && len(req.Header) > MaxHeaders {
			err = errHeadTooLarge
		}
		if err != nil {
			switch {
			case errors.Is(err, errHeadTooLarge):
				klog.Background().V(1).Info("router: request head too large", "port", port, "limitBytes", MaxHeaderBytes, "limitFields", MaxHeaders)
				writeStatus(bw, http.StatusRequestHeaderFieldsTooLarge)
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err):
				writeStatus(bw, http.StatusBadRequest)
			}
			return
		}
		if strings.EqualFold(req.Header.Get("Upgrade"), "h2c") {
			// An upgrade to cleartext HTTP/2 is optional for the server: stay on HTTP/1.1.
			req.Header.Del("Upgrade")
			req.Header.Del("Http2-Settings")
		}
		if _, ok := req.Header["User-Agent"]; !ok {
			req.Header["User-Agent"] = []string{""} // Request.Write adds Go's own otherwise
		}
		if req.Header.Get("Expect") == "100-continue" {
			// Answer it here: the client sends the body only then, and we forward it at once.
			req.Header.Del("Expect")
			if req.ContentLength != 0 {
				io.WriteString(bw, "HTTP/1.1 100 Continue\r\n\r\n")
				bw.Flush()
			}
		}
		// Connection management is per hop: the client's "Connection: close" ends the client's
		// connection, not the pooled upstream one. An upgrade keeps its headers.
		clientClose := req.Close
		if !isUpgrade(req.Header) {
			dropHopByHop(req.Header)
			req.Close = false
		}
		addr, _ := r.backend(req.Header, port)
		var tap *bodyTap
		mirrors := r.mirrorsFor(func(n string) (string, bool) {
			v := req.Header.Values(n)
			if len(v) == 0 {
				return "", false
			}
			return v[0], true
		}, req.RequestURI)
		var upgradeHead bytes.Buffer
		switch {
		case len(mirrors) > 0 && isUpgrade(req.Header):
			req.Write(&upgradeHead) // a WebSocket's copy starts with the same upgrade request
		case len(mirrors) > 0 && req.Body != nil && req.Body != http.NoBody:
			tap = &bodyTap{body: req.Body}
			req.Body = tap
		}
		u, resp, err := r.roundTrip(addr, req)
		if err != nil {
			klog.Background().V(1).Info("router: upstream failed", "port", port, "backend", addr, "err", err)
			writeStatus(bw, http.StatusBadGateway)
			return
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			if err := resp.Write(bw); err != nil || bw.Flush() != nil {
				u.close()
				return
			}
			var ts taps
			if upgradeHead.Len() > 0 {
				ts = startStreams(mirrors, port, upgradeHead.Bytes())
			}
			splice(c, br, u, ts)
			return
		}
		var copied func()
		if len(mirrors) > 0 {
			copied = func() {
				var body []byte
				cut := false
				if tap != nil {
					body, cut = tap.seen()
				}
				c := copyOf(req, body, cut, port)
				for _, mr := range mirrors {
					mr.offer(c)
				}
			}
		}
		if !r.relayParsed(bw, u, resp, req, clientClose, copied) {
			return
		}
	}
}

// relayParsed writes a parsed response to the client and frees or closes its upstream
// connection; it reports whether the client's connection goes on. copied, if set, queues the
// request's copies: once a response read whole is on its way to the client, so that the
// original does not wait for them, and before a streamed one, which may last.
func (r *Router) relayParsed(bw *bufio.Writer, u *upstream, resp *http.Response, req *http.Request, clientClose bool, copied func()) bool {
	if copied == nil {
		copied = func() {}
	}
	upstreamClose := resp.Close
	dropHopByHop(resp.Header)
	resp.Close = clientClose
	// A body that ends with the connection (no length, not chunked) ends the client's too.
	closeClient := clientClose || resp.ContentLength < 0 && !slices.Contains(resp.TransferEncoding, "chunked") && !bodyless(req, resp)
	if resp.ContentLength >= 0 && resp.ContentLength <= maxBuffered && !upstreamClose {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			u.close()
			copied()
			return false
		}
		r.pool.put(u)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		err = writeResponse(bw, resp)
		copied()
		if err != nil {
			return false
		}
	} else {
		copied()
		err := streamResponse(bw, resp, u.r)
		resp.Body.Close()
		if err != nil || upstreamClose {
			u.close() // the rest of the response may still be on its way
		} else {
			r.pool.put(u)
		}
		if err != nil {
			return false
		}
	}
	// The client asked to close, or the body ends with the connection.
	return !closeClient
}

// roundTrip sends req on a pooled or new connection to addr and reads the final response; a
// request that may be repeated, without a body, is retried once on a new connection when a
// kept one turns out closed.
func (r *Router) roundTrip(addr string, req *http.Request) (*upstream, *http.Response, error) {
	var resp *http.Response
	retry := (req.Body == nil || req.Body == http.NoBody) && repeatable(req.Method, req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != "")
	u, err := r.upstreamDo(addr, retry, func(u *upstream) (err error) {
		resp, err = u.exchange(req)
		return err
	})
	return u, resp, err
}

// repeatable is what net/http's transport sends again after a kept connection failed under
// it: a request idempotent by its method, or one whose client says it may be repeated. Others
// may have been carried out before the connection broke.
func repeatable(method string, idempotencyKey bool) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return idempotencyKey
}

// upstreamDo runs do on a pooled connection to addr, or a new one. When do fails on a kept
// connection (the server may have closed it meanwhile) and retry allows, it runs once more on
// a new connection.
func (r *Router) upstreamDo(addr string, retry bool, do func(*upstream) error) (*upstream, error) {
	for attempt := 0; ; attempt++ {
		var u *upstream
		if attempt == 0 {
			u = r.pool.get(addr)
		}
		if u == nil {
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return nil, err
			}
			u = &upstream{addr: addr, conn: conn, r: bufio.NewReaderSize(conn, 16<<10), w: bufio.NewWriterSize(conn, 16<<10)}
		}
		err := do(u)
		if err == nil {
			u.used = true
			return u, nil
		}
		u.close()
		if !u.used || attempt > 0 || !retry {
			return nil, err
		}
	}
}

func (u *upstream) exchange(req *http.Request) (*http.Response, error) {
	if err := req.Write(u.w); err != nil {
		return nil, err
	}
	if err := u.w.Flush(); err != nil {
		return nil, err
	}
	return readFinal(u.r, req)
}

// readFinal reads the final response to req: other 1xx responses than 101 are informational
// (103 Early Hints) and optional, so they are dropped; the final one follows.
func readFinal(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body.Close()
			continue
		}
		return resp, nil
	}
}

// writeResponse writes resp, whose body is in memory; streamResponse writes one whose body
// comes from src, as it comes.
func writeResponse(bw *bufio.Writer, resp *http.Response) error {
	if err := resp.Write(bw); err != nil {
		return err
	}
	return bw.Flush()
}

func streamResponse(bw *bufio.Writer, resp *http.Response, src *bufio.Reader) error {
	resp.Body = flushBeforeWait{resp.Body, src, bw}
	if err := resp.Write(writerOnly{bw}); err != nil {
		return err
	}
	return bw.Flush()
}

// flushBeforeWait is a streamed body that sends what the client's writer holds before it waits
// for more from upstream: a body that trickles (server-sent events, gRPC-Web, a slow download,
// whatever its framing) reaches the client as it comes, and one that comes fast fills writes.
type flushBeforeWait struct {
	body io.Reader
	src  *bufio.Reader // under body
	bw   *bufio.Writer
}

func (f flushBeforeWait) Read(p []byte) (int, error) {
	if f.src.Buffered() == 0 && f.bw.Buffered() > 0 {
		if err := f.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return f.body.Read(p)
}

func (f flushBeforeWait) Close() error {
	if c, ok := f.body.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// writerOnly hides bufio.Writer's ReadFrom, which reads into the writer's own buffer: a read
// through flushBeforeWait must not flush that buffer under it.
type writerOnly struct{ io.Writer }

// splice copies both ways after a protocol switch (WebSocket), buffered bytes first; what the
// client sends is fed to ts too (the mirrors' copies).
func splice(c net.Conn, cr *bufio.Reader, u *upstream, ts taps) {
	defer u.close()
	done := make(chan struct{}, 2)
	go func() {
		defer ts.Close()
		var src io.Reader = cr
		if len(ts) > 0 {
			src = io.TeeReader(cr, ts)
		}
		io.Copy(u.conn, src)
		closeWrite(u.conn)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, u.r)
		closeWrite(c)
		done <- struct{}{}
	}()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// hopByHop are the headers that concern one connection only (RFC 9110, 7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade"}

func dropHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

func isUpgrade(h http.Header) bool {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if strings.EqualFold(strings.TrimSpace(name), "upgrade") {
				return true
			}
		}
	}
	return false
}

// bodyless reports a response that has no body whatever its headers say.
func bodyless(req *http.Request, resp *http.Response) bool {
	return req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified || resp.StatusCode < 200
}

func writeStatus(bw *bufio.Writer, code int) {
	io.WriteString(bw, "HTTP/1.1 "+strconv.Itoa(code)+" "+http.StatusText(code)+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	bw.Flush()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
