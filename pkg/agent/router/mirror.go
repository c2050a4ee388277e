package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// Mirroring: a mirror member takes no request away; each request it matches is answered by
// the original pods as without it, and a copy goes to the member's shadow from a bounded queue,
// whose answer is read and dropped. A copy never makes an original wait: a full queue, a slow
// or gone laptop drop copies, and they are counted.

const (
	// MaxMirrorBody bounds the body a copy carries; a longer one is cut and marked.
	MaxMirrorBody = 1 << 20
	// TruncatedHeader marks a copy whose body was cut at MaxMirrorBody; its value is the
	// original length, or "unknown".
	TruncatedHeader = "X-Kt-Mirror-Truncated"
	// A mirror queues at most mirrorQueue copies and mirrorQueueBytes of them, sent by
	// mirrorWorkers on connections of their own: a burst of small requests fits, a flood of
	// large uploads is dropped rather than held in the router's memory.
	mirrorQueue      = 1024
	mirrorQueueBytes = 16 << 20
	mirrorWorkers    = 16
	// mirrorTimeout bounds a copy's connect and each answer's wait.
	mirrorTimeout = 5 * time.Second
)

// copyReq is one copy: a whole HTTP/1.1 request as bytes, or an HTTP/2 one (gRPC) with the
// client's body as it was seen.
type copyReq struct {
	port   int
	method string
	raw    []byte
	h2     *http.Request // its URL's host is filled in by the worker
	size   int64
}

type mirror struct {
	h2                 *http2.Transport
	key, value, prefix string
	shadow             atomic.Pointer[string]
	queue              chan copyReq
	stop               chan struct{}
	sent, dropped      atomic.Int64
	batches            atomic.Int64 // writes of pipelined HTTP/1.1 copies
	queued             atomic.Int64 // bytes of the copies in queue
	streams            atomic.Int64 // stream copies open
	gathering          sync.Mutex   // held by the worker gathering a batch
	linger, timeout    time.Duration
}

func newMirror(m wire.MeshMember) *mirror { return newMirrorTimed(m, mirrorLinger, mirrorTimeout) }

// newMirrorTimed is newMirror with a linger and a timeout of its own (for tests).
func newMirrorTimed(m wire.MeshMember, linger, timeout time.Duration) *mirror {
	d := &net.Dialer{Timeout: timeout}
	mr := &mirror{h2: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}, key: m.Key, value: m.Value, prefix: m.PathPrefix, queue: make(chan copyReq, mirrorQueue), stop: make(chan struct{}), linger: linger, timeout: timeout}
	shadow := m.Shadow
	mr.shadow.Store(&shadow)
	for range mirrorWorkers {
		go mr.work()
	}
	return mr
}

// validMirror refuses a member the router cannot take as a mirror: it reads the Service's
// annotation, which anyone who may update the Service writes.
func validMirror(m wire.MeshMember) bool {
	if net.ParseIP(m.Shadow) == nil || len(m.Key) > 63 || len(m.Value) > 63 || len(m.PathPrefix) > 256 {
		return false
	}
	return m.PathPrefix == "" || strings.HasPrefix(m.PathPrefix, "/")
}

// matches tells whether a request with these headers and this target is copied.
func (mr *mirror) matches(get func(string) (string, bool), target string) bool {
	if mr.key != "" {
		if v, ok := get(mr.key); !ok || v != mr.value {
			return false
		}
	}
	if mr.prefix != "" {
		path, _, _ := strings.Cut(target, "?")
		if !strings.HasPrefix(path, mr.prefix) {
			return false
		}
	}
	return true
}

// offer queues c, or drops it when the queue is full.
func (mr *mirror) offer(c copyReq) {
	c.size = int64(len(c.raw))
	if c.h2 != nil {
		c.size = c.h2.ContentLength + 512
	}
	if mr.queued.Add(c.size) > mirrorQueueBytes {
		mr.queued.Add(-c.size)
		mr.dropped.Add(1)
		return
	}
	select {
	case mr.queue <- c:
	default:
		mr.queued.Add(-c.size)
		mr.dropped.Add(1)
	}
}

// offerAll queues c on each mirror.
func offerAll(ms []*mirror, c copyReq) {
	for _, mr := range ms {
		mr.offer(c)
	}
}

// work sends queued copies to the shadow. One worker at a time gathers a batch (what comes
// in mirrorLinger after the first copy, up to mirrorBatch copies or mirrorBatchBytes) while
// the others send theirs: HTTP/1.1 copies of a batch go pipelined, in one write, on a kept
// connection, and their answers are read in turn. Every hop to the laptop (the shadow, the
// tunnel, the laptop's kt) then handles a few large writes instead of one per copy, which is
// what mirroring costs the node the originals are served on.
func (mr *mirror) work() {
	conns := map[string]*mirrorConn{}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for {
		batch, ok := mr.gather()
		if !ok {
			return
		}
		byAddr := map[string][]copyReq{}
		var order []string
		for _, c := range batch {
			addr := net.JoinHostPort(*mr.shadow.Load(), strconv.Itoa(c.port))
			if c.h2 != nil {
				mr.sendH2(c.h2, addr)
				continue
			}
			if _, ok := byAddr[addr]; !ok {
				order = append(order, addr)
			}
			byAddr[addr] = append(byAddr[addr], c)
		}
		for addr, c := range conns {
			if _, ok := byAddr[addr]; !ok && len(conns) > 4 {
				c.close()
				delete(conns, addr)
			}
		}
		for _, addr := range order {
			c := conns[addr]
			if c == nil {
				c = &mirrorConn{addr: addr, timeout: mr.timeout}
				conns[addr] = c
			}
			sent := c.send(byAddr[addr], &mr.batches)
			mr.sent.Add(int64(sent))
			mr.dropped.Add(int64(len(byAddr[addr]) - sent))
		}
	}
}

// mirrorLinger is short next to what a developer waits for a copy (nobody waits for one), and
// long enough that at a few hundred requests a second a batch holds dozens of copies: in
// BenchmarkMirror a batch held 7 copies with 10 ms, 16 with 25 ms and 56 with 100 ms, and a
// copy cost the machine 1019, about 300 and about 160 µs of CPU (docs/benchmarks.md). The
// gatherer looks at the queue every mirrorLingerStep, and stops lingering once it holds a batch.
const (
	mirrorLinger     = 100 * time.Millisecond
	mirrorLingerStep = 10 * time.Millisecond
	mirrorBatch      = 256
	mirrorBatchBytes = 256 << 10
)

// gather takes the next batch off the queue, waiting for its first copy; false once the
// mirror stops. It sleeps through the linger rather than waking for each copy that comes in
// it: a few wake-ups per batch, not one per request, on the node the originals are served on.
func (mr *mirror) gather() ([]copyReq, bool) {
	mr.gathering.Lock()
	defer mr.gathering.Unlock()
	var batch []copyReq
	var size int64
	take := func(c copyReq) {
		mr.queued.Add(-c.size)
		batch = append(batch, c)
		size += c.size
	}
	select {
	case <-mr.stop:
		return nil, false
	case c := <-mr.queue:
		take(c)
	}
	full := func() bool { return len(mr.queue) >= mirrorBatch-1 || size+mr.queued.Load() >= mirrorBatchBytes }
	if !full() {
		step := time.NewTicker(mirrorLingerStep)
		for waited := time.Duration(0); waited < mr.linger && !full(); waited += mirrorLingerStep {
			select {
			case <-mr.stop:
				step.Stop()
				return nil, false
			case <-step.C:
			}
		}
		step.Stop()
	}
	for len(batch) < mirrorBatch && size < mirrorBatchBytes {
		select {
		case c := <-mr.queue:
			take(c)
		default:
			return batch, true
		}
	}
	return batch, true
}

// mirrorConn is a worker's kept connection to one shadow port. pipelined says its server
// answered on it and kept it open: only then does it take a batch in one write; a fresh
// connection takes one copy first, so that a server closing after each answer costs no
// more than a copy per connection.
type mirrorConn struct {
	addr      string
	timeout   time.Duration
	conn      net.Conn
	br        *bufio.Reader
	pipelined bool
	buf       []byte
}

func (c *mirrorConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// send delivers cs in order and returns how many were answered. A connection that fails or
// closes mid-batch is replaced, and the copies not yet answered go on the next one; sending
// stops at a timeout, or after two connections in a row answer none.
func (c *mirrorConn) send(cs []copyReq, writes *atomic.Int64) int {
	sent := 0
	for fails := 0; len(cs) > 0 && fails < 2; {
		fresh := c.conn == nil
		if fresh {
			conn, err := net.DialTimeout("tcp", c.addr, c.timeout)
			if err != nil {
				return sent
			}
			c.conn, c.br, c.pipelined = conn, bufio.NewReader(conn), false
		}
		n := len(cs)
		if !c.pipelined {
			n = 1
		}
		c.buf = c.buf[:0]
		for _, r := range cs[:n] {
			c.buf = append(c.buf, r.raw...)
		}
		c.conn.SetDeadline(time.Now().Add(c.timeout))
		answered, err := 0, error(nil)
		writes.Add(1)
		if _, err = c.conn.Write(c.buf); err == nil {
			for answered < n {
				if answered > 0 {
					// A slow server that answers in turn keeps the batch: what times out is
					// one that gives no answer for the timeout.
					c.conn.SetReadDeadline(time.Now().Add(c.timeout))
				}
				var closed bool
				if closed, err = answer(c.br, cs[answered]); err != nil {
					break
				}
				answered++
				if closed {
					err = io.EOF
					break
				}
			}
		}
		if cap(c.buf) > mirrorBatchBytes {
			c.buf = nil
		}
		sent += answered
		cs = cs[answered:]
		if err != nil {
			c.close()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return sent // a laptop that takes copies and does not answer them gets no more of this batch
			}
			if answered == 0 && !fresh {
				continue // the server closed a kept connection meanwhile: one more try, on a new one
			}
			if answered == 0 {
				fails++
			}
			continue
		}
		c.pipelined = true
	}
	return sent
}

// answer reads the answer to a copy whole; closed says the server ends the connection, and an
// error leaves it unusable. A plain answer (HTTP/1.1, of known length, keeping the connection)
// is skipped as the raw path reads it, with no header map: what the router spends on a copy,
// it spends on the node the originals are served on.
func answer(br *bufio.Reader, c copyReq) (closed bool, err error) {
	if rh, ok := peekPlainResponse(br); ok {
		br.Discard(len(rh.raw))
		_, err := br.Discard(int(rh.bodyLength(c.method)))
		return false, err
	}
	resp, err := readFinal(br, &http.Request{Method: c.method})
	if err != nil {
		return true, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Close, err
}

// sendH2 sends an HTTP/2 copy and reads its answer, trailers included.
func (mr *mirror) sendH2(req *http.Request, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), mr.timeout)
	defer cancel()
	req = req.WithContext(ctx)
	req.URL.Host = addr
	resp, err := mr.h2.RoundTrip(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		mr.dropped.Add(1)
		return
	}
	mr.sent.Add(1)
}

// copyH2 makes an HTTP/2 request (h2c, gRPC) and the body seen into a copy.
func copyH2(in *http.Request, body []byte, cut bool, port int) copyReq {
	u := *in.URL
	u.Scheme, u.Host = "http", ""
	out := &http.Request{Method: in.Method, URL: &u, Host: in.Host, Header: in.Header.Clone(), ContentLength: int64(len(body)),
		Body: io.NopCloser(bytes.NewReader(body)), Proto: "HTTP/2.0", ProtoMajor: 2}
	if cut {
		out.Header.Set(TruncatedHeader, "unknown")
	}
	dropHopByHop(out.Header)
	if te := in.Header.Get("Te"); strings.EqualFold(te, "trailers") {
		out.Header.Set("Te", "trailers") // gRPC's, the one TE HTTP/2 allows
	}
	return copyReq{port: port, method: in.Method, h2: out}
}

// setMirrors keeps one mirror per mirror member, by session: new ones start, gone ones stop,
// a moved shadow is followed.
func (r *Router) setMirrors(ms []wire.MeshMember) {
	r.mirrorMu.Lock()
	defer r.mirrorMu.Unlock()
	next := map[string]*mirror{}
	for _, m := range ms {
		if !validMirror(m) {
			continue
		}
		mr, ok := r.mirrors[m.Session]
		if !ok || mr.key != m.Key || mr.value != m.Value || mr.prefix != m.PathPrefix {
			if ok {
				close(mr.stop)
			}
			mr = newMirror(m)
		} else if *mr.shadow.Load() != m.Shadow {
			shadow := m.Shadow
			mr.shadow.Store(&shadow)
		}
		next[m.Session] = mr
	}
	for s, mr := range r.mirrors {
		if next[s] != mr {
			close(mr.stop)
		}
	}
	r.mirrors = next
	list := make([]*mirror, 0, len(next))
	for _, mr := range next {
		list = append(list, mr)
	}
	r.mirrorList.Store(&list)
}

// Mirrors counts each mirror's copies, by session.
func (r *Router) Mirrors() map[string]wire.MirrorStats {
	r.mirrorMu.Lock()
	defer r.mirrorMu.Unlock()
	out := map[string]wire.MirrorStats{}
	for s, mr := range r.mirrors {
		out[s] = wire.MirrorStats{Sent: mr.sent.Load(), Dropped: mr.dropped.Load(), Batches: mr.batches.Load()}
	}
	return out
}

// mirrorsFor returns the mirrors that copy a request; nil, at the cost of one atomic load,
// when there are none.
func (r *Router) mirrorsFor(get func(string) (string, bool), target string) []*mirror {
	l := r.mirrorList.Load()
	if l == nil || len(*l) == 0 {
		return nil
	}
	var out []*mirror
	for _, mr := range *l {
		if mr.matches(get, target) {
			out = append(out, mr)
		}
	}
	return out
}

// copyOf encodes a parsed request as a copy: its head as sent upstream, and the body seen,
// cut at MaxMirrorBody and marked so.
func copyOf(req *http.Request, body []byte, cut bool, port int) copyReq {
	out := &http.Request{Method: req.Method, URL: &url.URL{Opaque: req.RequestURI}, Host: req.Host, Header: req.Header.Clone(),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: int64(len(body)), Body: http.NoBody}
	if u, err := url.ParseRequestURI(req.RequestURI); err == nil {
		out.URL = u
	}
	if len(body) > 0 {
		out.Body = readCloser{bytes.NewReader(body)}
	}
	if cut {
		n := "unknown"
		if req.ContentLength > 0 {
			n = strconv.FormatInt(req.ContentLength, 10)
		}
		out.Header.Set(TruncatedHeader, n)
	}
	out.Header.Del("Transfer-Encoding")
	var b bytes.Buffer
	out.Write(&b)
	return copyReq{port: port, method: req.Method, raw: b.Bytes()}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// isGRPC tells a gRPC call, whose client may stream its messages for as long as the call lasts.
func isGRPC(req *http.Request) bool {
	return strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc")
}

// startGRPCStream opens the copy of a gRPC call on the mirror's shadow at once, and sends the
// client's messages on it as the client sends them (fed by a streamTap: the original never
// waits, a backlog over maxBacklog cuts the copy). What the shadow answers is read and dropped;
// it may stream for mirrorTimeout after the client's end, then the copy is ended. A copy counts
// as sent once all the client sent went out; nil, a drop counted, when maxStreams are open.
func (mr *mirror) startGRPCStream(in *http.Request, port int) *streamTap {
	if mr.streams.Add(1) > maxStreams {
		mr.streams.Add(-1)
		mr.dropped.Add(1)
		return nil
	}
	s := &streamTap{wake: make(chan struct{}, 1), done: make(chan struct{})}
	out := &http.Request{Method: in.Method, Host: in.Host, Header: in.Header.Clone(), Body: io.NopCloser(s), ContentLength: -1,
		URL: &url.URL{Scheme: "http", Host: net.JoinHostPort(*mr.shadow.Load(), strconv.Itoa(port)), Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery}}
	go func() {
		defer mr.streams.Add(-1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.done:
			case <-ctx.Done():
				return
			}
			t := time.NewTimer(mr.timeout)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-ctx.Done():
			}
		}()
		resp, err := mr.h2.RoundTrip(out.WithContext(ctx))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if s.delivered() {
			mr.sent.Add(1)
			return
		}
		s.fail()
		mr.dropped.Add(1)
	}()
	return s
}

// teeBody is a request body whose bytes read are also fed to taps, closed at its end.
type teeBody struct {
	io.ReadCloser
	taps taps
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.taps.Write(p[:n])
	if err == io.EOF {
		b.taps.Close()
	}
	return n, err
}

// bodyTap keeps the first MaxMirrorBody bytes read through a request body.
type bodyTap struct {
	body interface {
		Read([]byte) (int, error)
		Close() error
	}
	buf   bytes.Buffer
	cut   bool
	mu    sync.Mutex
	atEOF func() // called once the body has ended, if set
}

func (b *bodyTap) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.mu.Lock()
	if room := MaxMirrorBody - b.buf.Len(); n > room {
		b.buf.Write(p[:room])
		b.cut = true
	} else {
		b.buf.Write(p[:n])
	}
	b.mu.Unlock()
	if err == io.EOF && b.atEOF != nil {
		b.atEOF()
	}
	return n, err
}

func (b *bodyTap) Close() error { return b.body.Close() }

func (b *bodyTap) seen() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes()), b.cut
}
