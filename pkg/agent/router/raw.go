package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"

	"k8s.io/klog/v2"
)

// The plain request of keep-alive traffic (HTTP/1.1, a body of known small length, no
// connection-level headers, a response of known length) is relayed as the bytes that came,
// with only its head scanned for the mark and the framing: no header map, no re-encoding.
// It costs the router a fraction of the CPU of a parsed request, and so the developers who are
// not meshing little latency. Anything else (an upgrade, chunked or large bodies, Expect,
// Connection or other hop-by-hop headers, informational or close-delimited responses) is
// left to the parsing path, which sees the same bytes: nothing is consumed before the choice.

var crlf2 = []byte("\r\n\r\n")

// peekHead waits for a complete head (through its blank line) at the start of br and returns
// it without consuming it. ok is false if the head does not fit br's buffer or the read fails:
// the parsing path then reads the same bytes (and sees the same error).
func peekHead(br *bufio.Reader) (head []byte, ok bool) {
	if _, err := br.Peek(1); err != nil {
		return nil, false
	}
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, crlf2); i >= 0 {
			return b[:i+4], true
		}
		if bareLineEnd(b) {
			return nil, false // lines that end in LF alone: the parser reads them
		}
		if len(b) >= br.Size() {
			return nil, false
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return nil, false
		}
	}
}

// rawHead is what the fast path needs of a head.
type rawHead struct {
	first   []byte // request or status line
	length  int64  // Content-Length, -1 if absent
	headers [][2][]byte
}

// parseRawHead scans head; ok is false for anything the fast path leaves to the parser.
func parseRawHead(head []byte) (h rawHead, ok bool) {
	h.length = -1
	if bareLineEnd(head) {
		return h, false
	}
	lines := head[:len(head)-2] // each line ends in CRLF; drop the blank one
	i := bytes.Index(lines, []byte("\r\n"))
	h.first, lines = lines[:i], lines[i+2:]
	for len(lines) > 0 {
		i := bytes.Index(lines, []byte("\r\n"))
		line := lines[:i]
		lines = lines[i+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return h, false // obs-fold, a space before the colon, no name
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if h.length >= 0 || err != nil || n < 0 || value[0] == '+' {
				return h, false // repeated or malformed: the parser decides
			}
			h.length = n
		case asciiEqualFold(name, "transfer-encoding"), asciiEqualFold(name, "connection"),
			asciiEqualFold(name, "keep-alive"), asciiEqualFold(name, "proxy-connection"),
			asciiEqualFold(name, "te"), asciiEqualFold(name, "upgrade"), asciiEqualFold(name, "expect"),
			asciiEqualFold(name, "http2-settings"), asciiEqualFold(name, "trailer"):
			return h, false
		}
		if len(h.headers) == MaxHeaders {
			return h, false // the parsing path refuses it
		}
		h.headers = append(h.headers, [2][]byte{name, value})
	}
	return h, true
}

// bareLineEnd reports a CR or LF that is not part of a CRLF.
func bareLineEnd(b []byte) bool {
	crlf := bytes.Count(b, []byte("\r\n"))
	return bytes.Count(b, []byte("\n")) != crlf || bytes.Count(b, []byte("\r")) != crlf
}

// get returns the first value of the named header.
func (h *rawHead) get(name string) ([]byte, bool) {
	for _, kv := range h.headers {
		if asciiEqualFold(kv[0], name) {
			return kv[1], true
		}
	}
	return nil, false
}

// serveRaw relays one plain request from br if it is one; handled is false when it left the
// request, unread, to the parsing path. keep is false when the client connection is done.
func (r *Router) serveRaw(br *bufio.Reader, bw *bufio.Writer, port int) (handled, keep bool) {
	head, ok := peekHead(br)
	if !ok || len(head) > maxRawHead {
		return false, true
	}
	h, ok := parseRawHead(head)
	if !ok || h.length > maxBuffered {
		return false, true
	}
	m, rest, _ := bytes.Cut(h.first, []byte(" "))
	method := string(m) // head is br's buffer, which the next read overwrites
	if !bytes.HasSuffix(rest, []byte(" HTTP/1.1")) || bytes.Count(h.first, []byte(" ")) != 2 || !isToken(m) || method == http.MethodConnect || method == "PRI" {
		return false, true
	}
	if _, ok := h.get("Host"); !ok {
		return false, true
	}
	r.rawRequests.Add(1)
	addr := r.rawBackend(&h, port)
	target := string(bytes.TrimSuffix(rest, []byte(" HTTP/1.1")))
	mirrors := r.mirrorsFor(func(n string) (string, bool) { v, ok := h.get(n); return string(v), ok }, target)
	_, key := h.get("Idempotency-Key")
	_, xkey := h.get("X-Idempotency-Key")
	retry := repeatable(method, key || xkey)
	req := make([]byte, len(head), len(head)+int(max(h.length, 0)))
	copy(req, head)
	br.Discard(len(head))
	if h.length > 0 {
		req = req[:cap(req)]
		if _, err := io.ReadFull(br, req[len(head):]); err != nil {
			return true, false
		}
	}
	// The copies are queued once a response read whole is on its way to the client, so that
	// the original does not wait for them, or before a streamed one, which may last; req is not
	// written to again, the copies share it.
	c := copyReq{port: port, method: method, raw: req}
	var copied func() // for relayParsed, only when there are copies: a closure costs an allocation
	if len(mirrors) > 0 {
		copied = func() { offerAll(mirrors, c) }
	}
	u, rh, resp, err := r.rawRoundTrip(addr, req, retry)
	if err == nil && resp != nil && resp.StatusCode == http.StatusSwitchingProtocols {
		u.close() // a protocol switch nobody asked for
		err = errors.New("101 Switching Protocols without an Upgrade request")
	}
	if err != nil {
		klog.Background().V(1).Info("router: upstream failed", "port", port, "backend", addr, "err", err)
		writeStatus(bw, http.StatusBadGateway)
		offerAll(mirrors, c)
		return true, false
	}
	if rh == nil {
		return true, r.relayParsed(bw, u, resp, &http.Request{Method: method}, false, copied)
	}
	n := rh.bodyLength(method)
	if len(rh.raw)+int(n) <= maxBuffered {
		out := make([]byte, len(rh.raw), len(rh.raw)+int(n))
		copy(out, rh.raw)
		u.r.Discard(len(rh.raw))
		if n > 0 {
			out = out[:cap(out)]
			if _, err := io.ReadFull(u.r, out[len(rh.raw):]); err != nil {
				u.close()
				offerAll(mirrors, c)
				return true, false
			}
		}
		r.pool.put(u)
		_, err := bw.Write(out)
		if err == nil {
			err = bw.Flush()
		}
		offerAll(mirrors, c)
		return true, err == nil
	}
	offerAll(mirrors, c)
	bw.Write(rh.raw)
	u.r.Discard(len(rh.raw))
	if _, err := io.CopyN(writerOnly{bw}, flushBeforeWait{u.r, u.r, bw}, n); err != nil {
		u.close()
		return true, false
	}
	r.pool.put(u)
	return true, bw.Flush() == nil
}

// maxRawHead bounds a head relayed raw; larger ones take the parsing path.
const maxRawHead = 16 << 10

// respHead is a response head found raw.
type respHead struct {
	rawHead
	raw []byte
}

// rawRoundTrip sends req (a whole request) on a pooled or new connection to addr. If the
// response is plain, it returns its head, still unread in u.r; otherwise the response as the
// parser reads it. A kept connection that turns out closed is replaced once if retry allows.
func (r *Router) rawRoundTrip(addr string, req []byte, retry bool) (*upstream, *respHead, *http.Response, error) {
	var rh *respHead
	var resp *http.Response
	u, err := r.upstreamDo(addr, retry, func(u *upstream) (err error) {
		rh, resp, err = u.rawExchange(req)
		return err
	})
	return u, rh, resp, err
}

func (u *upstream) rawExchange(req []byte) (*respHead, *http.Response, error) {
	if _, err := u.conn.Write(req); err != nil {
		return nil, nil, err
	}
	if rh, ok := peekPlainResponse(u.r); ok {
		return rh, nil, nil
	}
	method, _, _ := bytes.Cut(req, []byte(" "))
	resp, err := readFinal(u.r, &http.Request{Method: string(method)})
	return nil, resp, err
}

// peekPlainResponse finds a plain response's head at the start of br, unread.
func peekPlainResponse(br *bufio.Reader) (*respHead, bool) {
	if head, ok := peekHead(br); ok {
		if h, ok := parseRawHead(head); ok && plainResponse(h) {
			return &respHead{rawHead: h, raw: head}, true
		}
	}
	return nil, false
}

// bodyLength is the length of a plain response's body, the answer to a request of method.
func (h *respHead) bodyLength(method string) int64 {
	if code, _ := statusCode(h.first); method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0
	}
	return h.length
}

// plainResponse is an HTTP/1.1 final response of known length that keeps the connection.
func plainResponse(h rawHead) bool {
	code, ok := statusCode(h.first)
	return ok && bytes.HasPrefix(h.first, []byte("HTTP/1.1 ")) && code >= 200 && (h.length >= 0 || code == http.StatusNoContent || code == http.StatusNotModified)
}

func statusCode(line []byte) (int, bool) {
	if len(line) < 12 || len(line) > 12 && line[12] != ' ' {
		return 0, false
	}
	code, err := strconv.Atoi(string(line[9:12]))
	return code, err == nil && code >= 100 && code <= 999
}

// rawBackend is backend for a raw head: the first member whose mark it carries, else the origin.
func (r *Router) rawBackend(h *rawHead, port int) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, m := range r.members {
		if v, ok := h.get(m.Key); ok && !m.Mirror && string(v) == m.Value && m.Shadow != "" {
			return net.JoinHostPort(m.Shadow, strconv.Itoa(port))
		}
	}
	return net.JoinHostPort(r.Origin, strconv.Itoa(port))
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
