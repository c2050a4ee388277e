package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// backends starts an "origin" on 127.0.0.1 and a developer's "shadow" on 127.0.0.2, on one
// port (the router sends to backend:port), and a router for them; it returns the router's address.
func backends(t *testing.T, h func(name string) http.Handler) (string, *Router) {
	t.Helper()
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ol.Addr().(*net.TCPAddr).Port
	sl, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	for name, l := range map[string]net.Listener{"origin": ol, "shadow": sl} {
		s := &http.Server{Handler: h2c.NewHandler(h(name), &http2.Server{})}
		go s.Serve(l)
		t.Cleanup(func() { s.Close() })
	}
	r := New("127.0.0.1")
	r.SetMembers([]wire.MeshMember{{Key: "version", Value: "dev1", Shadow: "127.0.0.2", Owner: "me"}})
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Serve(ctx, rl, port)
	return rl.Addr().String(), r
}

func echoName(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s ua=%q body=%q", name, r.Method, r.URL.Path, r.UserAgent(), body)
	})
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestRoutesEachRequestOnAKeptConnection(t *testing.T) {
	addr, _ := backends(t, echoName)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}} // one client connection
	for i := 0; i < 5; i++ {
		if got := get(t, c, "http://"+addr+"/a"); !strings.HasPrefix(got, "origin GET /a") {
			t.Fatalf("unmarked request reached %q", got)
		}
		if got := get(t, c, "http://"+addr+"/b", "Version", "dev1"); !strings.HasPrefix(got, "shadow GET /b") {
			t.Fatalf("marked request reached %q", got)
		}
		if got := get(t, c, "http://"+addr+"/c", "Version", "other"); !strings.HasPrefix(got, "origin") {
			t.Fatalf("request with another value reached %q", got)
		}
	}
}

func TestHeadersAndBodiesPassAsSent(t *testing.T) {
	addr, _ := backends(t, echoName)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	// No User-Agent: none must be added. A chunked body, then Expect: 100-continue.
	io.WriteString(conn, "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if want := `origin POST /p ua="" body="abc"`; string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
	io.WriteString(conn, "PUT /q HTTP/1.1\r\nHost: x\r\nVersion: dev1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue before the body, got %v %v", resp, err)
	}
	io.WriteString(conn, "hi")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	if want := `shadow PUT /q ua="" body="hi"`; string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
}

func TestStreamingResponseIsFlushedAsItComes(t *testing.T) {
	release := make(chan struct{})
	addr, _ := backends(t, func(string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: second\n\n")
		})
	})
	resp, err := http.Get("http://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	close(release)
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event did not arrive before the stream ended: %q %v", line, err)
	}
}

func TestUpgradeSplicesBothWays(t *testing.T) {
	addr, _ := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			line, _ := brw.ReadString('\n')
			io.WriteString(c, name+":"+line)
		})
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nVersion: dev1\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nping\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("want 101, got %v %v", resp, err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "shadow:ping\n" {
		t.Fatalf("got %q %v", line, err)
	}
}

func TestStaleUpstreamConnectionIsRetried(t *testing.T) {
	addr, _ := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/close" {
				// Answer, then drop the kept connection without saying so.
				w.Header().Set("Content-Length", "2")
				io.WriteString(w, "ok")
				w.(http.Flusher).Flush()
				c, _, _ := http.NewResponseController(w).Hijack()
				c.Close()
				return
			}
			io.WriteString(w, name)
		})
	})
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	if got := get(t, c, "http://"+addr+"/close"); got != "ok" {
		t.Fatalf("got %q", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := get(t, c, "http://"+addr+"/again"); got != "origin" {
		t.Fatalf("after the upstream dropped its connection: %q", got)
	}
}

func TestBadGatewayWhenTheBackendIsDown(t *testing.T) {
	addr, r := backends(t, echoName)
	r.SetMembers([]wire.MeshMember{{Key: "version", Value: "dev1", Shadow: "127.0.0.9", Owner: "me"}})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("origin: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("version", "dev1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a member whose shadow is gone: got %d, want 502", resp.StatusCode)
	}
}

func TestHTTP2PriorKnowledgeIsRoutedPerRequest(t *testing.T) {
	addr, _ := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", name, r.Proto) })
	})
	c := &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(n, a)
	}}}
	if got := get(t, c, "http://"+addr+"/"); got != "origin HTTP/2.0" {
		t.Fatalf("got %q", got)
	}
	if got := get(t, c, "http://"+addr+"/", "Version", "dev1"); got != "shadow HTTP/2.0" {
		t.Fatalf("got %q", got)
	}
}

func TestTLSPassesThroughToTheOrigin(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls origin") }))
	ts.StartTLS()
	defer ts.Close()
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	r := New(host)
	r.SetMembers([]wire.MeshMember{{Key: "version", Value: "dev1", Shadow: "127.0.0.2", Owner: "me"}})
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, rl, p)
	c := ts.Client()
	if got := get(t, c, "https://"+rl.Addr().String()+"/", "Version", "dev1"); got != "tls origin" {
		t.Fatalf("got %q", got)
	}
}

func TestClientsConnectionCloseDoesNotCloseTheUpstream(t *testing.T) {
	var conns atomic.Int32
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go origin.Serve(ol)
	defer origin.Close()
	r := New("127.0.0.1")
	rl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, rl, ol.Addr().(*net.TCPAddr).Port)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // "Connection: close" each time
	for i := 0; i < 10; i++ {
		if got := get(t, c, "http://"+rl.Addr().String()+"/"); got != "origin" {
			t.Fatalf("got %q", got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("10 requests, each on a new client connection, opened %d upstream connections; want 1 (pooled)", n)
	}
}

func TestBodyEndingWithTheConnectionEndsTheClients(t *testing.T) {
	addr, _ := backends(t, func(string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
			c.Close()
		})
	})
	c := &http.Client{Timeout: 5 * time.Second}
	if got := get(t, c, "http://"+addr+"/"); got != "until the end" {
		t.Errorf("got %q", got)
	}
}

// TestPassthroughPassesTheOriginsCloseOn: when the origin ends a passed-through connection,
// the client sees the end too, while it is still sending nothing.
func TestPassthroughPassesTheOriginsCloseOn(t *testing.T) {
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	go func() {
		c, err := ol.Accept()
		if err != nil {
			return
		}
		c.Read(make([]byte, 16))
		io.WriteString(c, "bye")
		c.Close()
	}()
	r := New("127.0.0.1")
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, rl, ol.Addr().(*net.TCPAddr).Port)
	c, err := net.Dial("tcp", rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 3, 1}) // the start of a TLS record
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("got %q, %v: want the origin's bytes, then its close", got, err)
	}
}

func TestSinceLastAcceptCountsFromTheLastConnection(t *testing.T) {
	addr, r := backends(t, echoName)
	time.Sleep(50 * time.Millisecond)
	if d := r.SinceLastAccept(); d < 50*time.Millisecond {
		t.Fatalf("before any connection: %v since the last accept, want the router's age (>= 50ms)", d)
	}
	probe, err := net.Dial("tcp", addr) // a TCP probe: connects, sends nothing, closes
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	time.Sleep(20 * time.Millisecond)
	if d := r.SinceLastAccept(); d < 70*time.Millisecond {
		t.Fatalf("after a probe that sent nothing: %v since the last accept, want the router's age (>= 70ms)", d)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	sent := time.Now()
	get(t, c, "http://"+addr+"/")
	if d, most := r.SinceLastAccept(), time.Since(sent); d > most {
		t.Fatalf("just after a connection: %v since the last accept, want at most the %v since it was sent", d, most)
	}
	time.Sleep(30 * time.Millisecond)
	if d := r.SinceLastAccept(); d < 30*time.Millisecond {
		t.Fatalf("30ms later: %v since the last accept", d)
	}
}

// An oversized head is refused with 431 after reading at most MaxHeaderBytes of it, and the
// router's heap does not follow what the client sends (126 MiB of header lines grew it by
// 134 MiB); other clients keep being served meanwhile.
func TestOversizedHeadIsRefusedWithoutBuffering(t *testing.T) {
	addr, _ := backends(t, echoName)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := make(chan int64, 1)
	go func() {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		line := []byte("X-Filler: " + strings.Repeat("a", 1000) + "\r\n")
		var n int64
		for n < 32<<20 {
			if _, err := c.Write(line); err != nil {
				break
			}
			n += int64(len(line))
		}
		sent <- n
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	c.Close()
	if n := <-sent; n >= 32<<20 {
		t.Errorf("the router read all %d bytes of the head", n)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Errorf("heap grew by %d MiB", grew>>20)
	}
	// Many small fields: the count is bounded too.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := 0; i < MaxHeaders+10; i++ {
		fmt.Fprintf(&b, "X-%d: 1\r\n", i)
	}
	b.WriteString("\r\n")
	io.WriteString(c2, b.String())
	if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("%d fields: %v %v", MaxHeaders+10, resp, err)
	}
	// And the router still serves everyone else.
	if got := get(t, http.DefaultClient, "http://"+addr+"/after", "version", "dev1"); !strings.HasPrefix(got, "shadow GET /after") {
		t.Errorf("after the oversized heads: %q", got)
	}
}

// A pooled connection that an HTTP client opened ahead of need stays silent for longer than
// the router waits for a server that speaks first; its requests must still be routed.
func TestSilentConnectionThatThenSpeaksHTTPIsRouted(t *testing.T) {
	addr, _ := backends(t, echoName)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(serverFirstWait + 500*time.Millisecond)
	io.WriteString(c, "GET /late HTTP/1.1\r\nHost: x\r\nVersion: dev1\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(b), "shadow GET /late") {
		t.Errorf("a marked request on a connection silent for %v reached %q, want the shadow", serverFirstWait, b)
	}
}

// A server that speaks first (SMTP, MySQL) gets its greeting through, then both ways.
func TestServerThatSpeaksFirstIsPassedThrough(t *testing.T) {
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	go func() {
		for {
			c, err := ol.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "220 greetings\r\n")
				io.Copy(c, c)
			}()
		}
	}()
	port := ol.Addr().(*net.TCPAddr).Port
	r := New("127.0.0.1")
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, rl, port)
	c, err := net.Dial("tcp", rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(serverFirstWait + 5*time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || l != "220 greetings\r\n" {
		t.Fatalf("greeting %q, %v", l, err)
	}
	io.WriteString(c, "EHLO x\r\n")
	if l, err := br.ReadString('\n'); err != nil || l != "EHLO x\r\n" {
		t.Fatalf("echo %q, %v", l, err)
	}
}
