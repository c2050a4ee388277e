package agent

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// The first bytes of a mux stream come from whoever holds the session: readConnect must
// never panic or read past what it is given, and what it accepts is a host:port.
func FuzzReadConnect(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 10, 96, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 3, 'w', 'e', 'b', 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187})
	f.Add([]byte{5, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		addr, _, err := readConnect(bytes.NewReader(data))
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			t.Errorf("accepted %q: %v", addr, err)
		}
	})
}

func TestReadConnectRefusesBadDomains(t *testing.T) {
	for _, host := range []string{"0]0", "a:b", "[::1]", "", "web\x00", "web\nHost", "a b"} {
		req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
		req = append(req, 0, 80)
		if addr, code, err := readConnect(bytes.NewReader(req)); err == nil || code != socksHostUnreach {
			t.Errorf("domain %q: got %q, code %d, err %v; want refused with host unreachable", host, addr, code, err)
		}
	}
	for _, host := range []string{"web", "web.default.svc.cluster.local", "10.96.0.1", "my_host-1"} {
		req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
		req = append(req, 0, 80)
		if addr, _, err := readConnect(bytes.NewReader(req)); err != nil || addr != net.JoinHostPort(host, "80") {
			t.Errorf("domain %q: got %q, %v", host, addr, err)
		}
	}
}

// fuzzConn reads its input and drops what is written.
type fuzzConn struct {
	net.Conn
	r *bytes.Reader
}

func (c fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c fuzzConn) Close() error                     { return nil }
func (c fuzzConn) SetWriteDeadline(time.Time) error { return nil }
func (c fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }

// Whatever pod reaches the pod-proxy front writes its first bytes: proxyHandshake must never
// panic, and never accept a stream, as none can answer a nonce it has not seen.
func FuzzProxyHandshake(f *testing.F) {
	f.Add([]byte(upgradeRequest + strings.Repeat("\x00", 32)))
	f.Add([]byte("GET /reverse HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: KT-REVERSE/1\r\n\r\n"))
	f.Add([]byte("GET /reverse HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	secret := bytes.Repeat([]byte{1}, 32)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := proxyHandshake(fuzzConn{r: bytes.NewReader(data)}, secret); err == nil {
			t.Errorf("accepted %q", data)
		}
	})
}
