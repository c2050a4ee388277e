package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

type seenReq struct {
	method, path, truncated string
	body                    []byte
}

// recording answers as echoName does and, on the shadow, records each request it gets.
func recording(mu *sync.Mutex, seen *[]seenReq, delay time.Duration) func(string) http.Handler {
	return func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if name == "shadow" {
				time.Sleep(delay)
				mu.Lock()
				*seen = append(*seen, seenReq{r.Method, r.URL.Path, r.Header.Get(TruncatedHeader), body})
				mu.Unlock()
			}
			io.WriteString(w, name+" "+r.URL.Path)
		})
	}
}

func TestMirrorCopiesEachRequestAndTakesNone(t *testing.T) {
	var mu sync.Mutex
	var seen []seenReq
	addr, r := backends(t, recording(&mu, &seen, 0))
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2", Owner: "me"}})
	c := &http.Client{}
	for i := 0; i < 5; i++ { // the raw path
		if got := get(t, c, "http://"+addr+"/raw"); got != "origin /raw" {
			t.Fatalf("answered by %q", got)
		}
	}
	big := bytes.Repeat([]byte("x"), 100<<10) // the parsing path: over maxBuffered
	huge := bytes.Repeat([]byte("y"), MaxMirrorBody+1000)
	for _, b := range [][]byte{big, huge} {
		resp, err := c.Post("http://"+addr+"/post", "text/plain", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != "origin /post" {
			t.Fatalf("answered by %q", got)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 7 && r.Mirrors()["m1"].Sent >= 7 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var raw, posts int
	for _, s := range seen {
		switch {
		case s.path == "/raw" && s.method == http.MethodGet:
			raw++
		case s.path == "/post" && len(s.body) == len(big) && s.truncated == "":
			posts++
		case s.path == "/post" && len(s.body) == MaxMirrorBody && s.truncated == "1049576" && s.body[0] == 'y':
			posts++
		default:
			t.Errorf("unexpected copy %s %s %d bytes truncated=%q", s.method, s.path, len(s.body), s.truncated)
		}
	}
	if raw != 5 || posts != 2 {
		t.Errorf("copies: %d GET, %d POST; want 5 and 2", raw, posts)
	}
	if st := r.Mirrors()["m1"]; st.Sent != 7 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 7 sent", st)
	}
}

// A laptop that is gone, or slow, costs the originals nothing: the copies are dropped and
// counted.
func TestMirrorThatIsGoneOrSlowDropsCopies(t *testing.T) {
	var mu sync.Mutex
	var seen []seenReq
	addr, r := backends(t, recording(&mu, &seen, 2*time.Second))
	r.SetMembers([]wire.MeshMember{
		{Session: "gone", Mirror: true, Shadow: "127.0.0.9", Owner: "a"},
		{Session: "slow", Mirror: true, Shadow: "127.0.0.2", Owner: "b", Key: "x-copy", Value: "yes"},
	})
	c := &http.Client{}
	const n = 600
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if got := get(t, c, "http://"+addr+"/r", "X-Copy", "yes"); got != "origin /r" {
			t.Fatalf("answered by %q", got)
		}
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("request %d took %s", i, d)
		}
	}
	st := r.Mirrors()
	if g := st["gone"]; g.Sent != 0 || g.Dropped < n-mirrorQueue-mirrorWorkers {
		t.Errorf("gone: %+v", g)
	}
	if s := st["slow"]; s.Dropped < n-mirrorQueue-mirrorWorkers {
		t.Errorf("slow: %+v; want most of %d dropped", s, n)
	}
}

func TestMirrorFilters(t *testing.T) {
	mr := &mirror{key: "version", value: "dev1", prefix: "/api/"}
	h := func(v string) func(string) (string, bool) {
		return func(n string) (string, bool) { return v, v != "" && strings.EqualFold(n, "version") }
	}
	for _, tc := range []struct {
		v, target string
		want      bool
	}{
		{"dev1", "/api/x?q=1", true},
		{"dev2", "/api/x", false},
		{"", "/api/x", false},
		{"dev1", "/apix", false},
		{"dev1", "/other?/api/", false},
	} {
		if got := mr.matches(h(tc.v), tc.target); got != tc.want {
			t.Errorf("%q %q: %v", tc.v, tc.target, got)
		}
	}
	for _, m := range []wire.MeshMember{{Shadow: "not-an-ip"}, {Shadow: "10.0.0.1", PathPrefix: "api"}, {Shadow: "10.0.0.1", PathPrefix: "/" + strings.Repeat("a", 300)}} {
		if validMirror(m) {
			t.Errorf("%+v taken as a mirror", m)
		}
	}
}

// A mirror's empty mark must not route every request to it.
func TestMirrorIsNeverARoute(t *testing.T) {
	addr, r := backends(t, echoName)
	r.SetMembers([]wire.MeshMember{{Session: "m", Mirror: true, Shadow: "127.0.0.2"}})
	if got := get(t, &http.Client{}, "http://"+addr+"/"); !strings.HasPrefix(got, "origin") {
		t.Errorf("answered by %q", got)
	}
}

// HTTP/2 with prior knowledge (gRPC's transport): the copy carries the client's body.
func TestMirrorCopiesHTTP2Requests(t *testing.T) {
	var mu sync.Mutex
	var seen []seenReq
	addr, r := backends(t, recording(&mu, &seen, 0))
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2", PathPrefix: "/grpc."}})
	c := &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(n, a)
	}}}
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/other"} {
		resp, err := c.Post("http://"+addr+path, "application/grpc", strings.NewReader("\x00\x00\x00\x00\x02hi"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != "origin "+path {
			t.Fatalf("answered by %q", got)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); r.Mirrors()["m1"].Sent < 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0].path != "/grpc.health.v1.Health/Check" || string(seen[0].body) != "\x00\x00\x00\x00\x02hi" {
		t.Errorf("copies %+v, want the one under /grpc.", seen)
	}
}

// A server-streaming call (gRPC's Watch) is copied once the client's body ends, while the
// origin still streams; a client that cancels before ending its body gets what it sent copied.
func TestMirrorCopiesAStreamAtTheClientsHalfClose(t *testing.T) {
	var mu sync.Mutex
	var seen []seenReq
	rec := recording(&mu, &seen, 0)
	addr, r := backends(t, func(name string) http.Handler {
		if name == "shadow" {
			return rec(name)
		}
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			io.ReadAll(req.Body)
			for { // streams until the client goes
				if _, err := io.WriteString(w, "tick\n"); err != nil {
					return
				}
				http.NewResponseController(w).Flush()
				select {
				case <-req.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	})
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2"}})
	c := &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(n, a)
	}}}
	copies := func() []seenReq {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenReq(nil), seen...)
	}
	wait := func(n int) {
		for deadline := time.Now().Add(5 * time.Second); len(copies()) < n && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/watch", strings.NewReader("\x00\x00\x00\x00\x02hi"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if l, _ := br.ReadString('\n'); l != "tick\n" {
		t.Fatalf("stream: %q", l)
	}
	wait(1)
	if got := copies(); len(got) != 1 || got[0].path != "/watch" || string(got[0].body) != "\x00\x00\x00\x00\x02hi" {
		t.Errorf("while the origin streams: copies %+v, want the client's message", got)
	}
	if l, _ := br.ReadString('\n'); l != "tick\n" {
		t.Errorf("the stream stopped after the copy: %q", l)
	}
	cancel()
	resp.Body.Close()

	// The client sends part of its stream and cancels.
	pr, pw := io.Pipe()
	ctx, cancel = context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/cancelled", pr)
	go pw.Write([]byte("part"))
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	if resp, err := c.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wait(2)
	if got := copies(); len(got) != 2 || got[1].path != "/cancelled" || string(got[1].body) != "part" {
		t.Errorf("after a cancelled stream: copies %+v, want what it sent", got)
	}
}

// A connection that is not HTTP passes through to the origin, and the client's bytes are
// copied to each mirror of every request on a connection of its own. Text protocols whose
// first word is upper case, as an HTTP method is, are no HTTP either: the router answered
// Redis's "SET k v" and "HELLO raw protocol" with a 400 of its own, and copied nothing.
func TestMirrorCopiesPlainTCP(t *testing.T) {
	ol, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	port := ol.Addr().(*net.TCPAddr).Port
	sl, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	defer sl.Close()
	go func() { // the origin: an echo server
		for {
			c, err := ol.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	copied := make(chan string, 1)
	go func() { // the shadow: records what it gets
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			copied <- string(b)
		}
	}()
	r := New("127.0.0.1")
	r.SetMembers([]wire.MeshMember{{Session: "m", Mirror: true, Shadow: "127.0.0.2"}})
	rl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, rl, port)
	for _, sent := range []string{"\x01hello raw\n", "SET key value\r\nGET key\r\n", "HELLO raw protocol\n", "PING\r\n", "HELO mail.example\r\n", "GET / HTTP\n"} {
		c, err := net.Dial("tcp", rl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, sent)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != sent {
			t.Errorf("%q: the origin's echo: %q", sent, got)
		}
		select {
		case s := <-copied:
			if s != sent {
				t.Errorf("%q: copy %q", sent, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: no copy", sent)
		}
	}
}

// looksHTTP takes a request line for HTTP, and nothing else, wherever the client's writes
// end.
func TestLooksHTTP(t *testing.T) {
	long := "GET /" + strings.Repeat("a", 8000) + " HTTP/1.1\r\n"
	for in, want := range map[string]bool{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n": true,
		"POST /api?q=a%20b HTTP/1.0\n":      true,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":  true,
		"M-SEARCH * HTTP/1.1\r\n":           true,
		long:                                true,
		"SET key value\r\n":                 false,
		"HELLO raw protocol\n":              false,
		"GET key\r\n":                       false,
		"GET  HTTP/1.1\r\n":                 false,
		"get / HTTP/1.1\r\n":                false,
		"GET / HTTP/1.1":                    false, // the client closed before the line ended
		"\x16\x03\x01":                      false,
		"":                                  false,
	} {
		if got := looksHTTP(bufio.NewReader(strings.NewReader(in))); got != want {
			t.Errorf("%.40q: %v, want %v", in, got, want)
		}
	}
	// A request line written in pieces is read to its end.
	pr, pw := io.Pipe()
	go func() {
		for _, p := range []string{"GE", "T /a", "b HTT", "P/1.1\r", "\n"} {
			pw.Write([]byte(p))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if !looksHTTP(bufio.NewReader(pr)) {
		t.Error("a request line in pieces: not taken for HTTP")
	}
}

// A WebSocket's copy is the same upgrade request and then the client's frames.
func TestMirrorCopiesAWebSocketsClientBytes(t *testing.T) {
	var mu sync.Mutex
	var shadowGot bytes.Buffer
	addr, r := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			if name == "origin" {
				io.Copy(c, brw) // echo
				return
			}
			b, _ := io.ReadAll(brw)
			mu.Lock()
			shadowGot.Write(b)
			mu.Unlock()
		})
	})
	r.SetMembers([]wire.MeshMember{{Session: "m", Mirror: true, Shadow: "127.0.0.2"}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "frame-1 frame-2")
	buf := make([]byte, 15)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "frame-1 frame-2" {
		t.Fatalf("echo %q %v", buf, err)
	}
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); r.Mirrors()["m"].Sent < 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if shadowGot.String() != "frame-1 frame-2" {
		t.Errorf("the shadow got %q after its upgrade, want the client's frames", shadowGot.String())
	}
}

// Large copies for a laptop that does not read are held up to the byte bound, then dropped.
func TestMirrorQueueIsBoundedInBytes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	defer l.Close()
	go func() { // accepts and never reads
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	port := l.Addr().(*net.TCPAddr).Port
	body := bytes.Repeat([]byte("x"), MaxMirrorBody)
	const n = 64
	for range n {
		mr.offer(copyReq{port: port, method: "POST", raw: body})
		if q := mr.queued.Load(); q > mirrorQueueBytes {
			t.Fatalf("%d bytes queued, bound %d", q, mirrorQueueBytes)
		}
	}
	if d := mr.dropped.Load(); d < n-mirrorWorkers-mirrorQueueBytes/MaxMirrorBody {
		t.Errorf("%d of %d copies dropped, want at least %d", d, n, n-mirrorWorkers-mirrorQueueBytes/MaxMirrorBody)
	}
}

// A gRPC call's copy carries the client's messages as the client sends them, not at its end:
// a long bidirectional stream is seen on the laptop while it lasts.
func TestMirrorCopiesAGRPCStreamMessageByMessage(t *testing.T) {
	got := make(chan string, 10)
	addr, r := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			buf := make([]byte, 64)
			for {
				n, err := req.Body.Read(buf)
				if n > 0 {
					if name == "shadow" {
						got <- string(buf[:n])
					} else {
						w.Write(buf[:n]) // the origin echoes each message
						http.NewResponseController(w).Flush()
					}
				}
				if err != nil {
					if name == "shadow" {
						got <- "end"
					}
					return
				}
			}
		})
	})
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2"}})
	c := &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(n, a)
	}}}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/chat.Chat/Talk", pr)
	req.Header.Set("Content-Type", "application/grpc")
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			t.Error(err)
			close(done)
			return
		}
		done <- resp
	}()
	pw.Write([]byte("one"))
	resp := <-done
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	echo := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, echo); err != nil || string(echo) != "one" {
		t.Fatalf("the origin's answer: %q %v", echo, err)
	}
	next := func(want string) {
		t.Helper()
		select {
		case m := <-got:
			if m != want {
				t.Errorf("the copy got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("the copy did not get %q while the stream is open", want)
		}
	}
	next("one") // while the client's stream is still open
	pw.Write([]byte("two"))
	next("two")
	pw.Close()
	next("end")
	io.Copy(io.Discard, resp.Body)
	deadline := time.Now().Add(5 * time.Second)
	for r.Mirrors()["m1"].Sent != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.Mirrors()["m1"]; st.Sent != 1 || st.Dropped != 0 {
		t.Errorf("counts %+v, want one copy sent", st)
	}
}

// readCounter counts the reads that return bytes on the connections a listener accepts.
type readCounter struct {
	net.Listener
	reads *atomic.Int64
}

func (l readCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return countedConn{c, l.reads}, err
}

type countedConn struct {
	net.Conn
	reads *atomic.Int64
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// mirrorServer serves h on 127.0.0.2 and returns its port and a count of the reads on its
// connections.
func mirrorServer(t *testing.T, h http.HandlerFunc) (int, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	reads := &atomic.Int64{}
	srv := &http.Server{Handler: h}
	go srv.Serve(readCounter{l, reads})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port, reads
}

func rawCopy(port int, method, path string, header string) copyReq {
	return copyReq{port: port, method: method, raw: []byte(method + " " + path + " HTTP/1.1\r\nHost: web\r\n" + header + "\r\n")}
}

func waitCopies(t *testing.T, mr *mirror, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for mr.sent.Load()+mr.dropped.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// Copies offered together go pipelined in a few writes, every one answered and counted, in
// the order they came.
func TestMirrorBatchesShareWrites(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	port, reads := mirrorServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if r.Method != http.MethodHead {
			io.WriteString(w, strings.Repeat("answer ", 50))
		}
	})
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	mr.offer(rawCopy(port, "GET", "/warm", "")) // the connection learns it may pipeline
	waitCopies(t, mr, 1)
	const n = 100
	for i := range n {
		method := "GET"
		if i%10 == 3 {
			method = "HEAD" // an answer without a body in the middle of a batch
		}
		mr.offer(rawCopy(port, method, "/c/"+strconv.Itoa(i), ""))
	}
	waitCopies(t, mr, n+1)
	if s, d := mr.sent.Load(), mr.dropped.Load(); s != n+1 || d != 0 {
		t.Fatalf("%d sent, %d dropped; want %d sent", s, d, n+1)
	}
	if r := reads.Load(); r > n/4 {
		t.Errorf("the server read %d times for %d copies: the copies were not batched", r, n+1)
	}
	if w := mr.batches.Load(); w > n/4 {
		t.Errorf("%d writes counted for %d copies", w, n+1)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	for _, p := range paths {
		seen[p] = true
	}
	for i := range n {
		if !seen["/c/"+strconv.Itoa(i)] {
			t.Errorf("copy /c/%d never reached the server", i)
		}
	}
}

// A server that closes the connection after each answer (Connection: close, HTTP/1.0) still
// gets every copy, one per connection; one that closes in the middle of a batch gets the rest
// on a new connection.
func TestMirrorBatchOnAClosingServer(t *testing.T) {
	var got atomic.Int64
	port, _ := mirrorServer(t, func(w http.ResponseWriter, r *http.Request) {
		if got.Add(1)%7 == 0 || r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
	})
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	const n = 60
	for i := range n {
		if i%2 == 0 {
			mr.offer(rawCopy(port, "GET", "/close", "Connection: close\r\n"))
		} else {
			mr.offer(rawCopy(port, "GET", "/keep", ""))
		}
	}
	waitCopies(t, mr, n)
	if s, d := mr.sent.Load(), mr.dropped.Load(); s != n || d != 0 || got.Load() != n {
		t.Errorf("%d sent, %d dropped, %d served; want all %d", s, d, got.Load(), n)
	}
}

// A server that takes copies and never answers has them dropped and counted after the
// timeout; it is not sent the same copies again and again.
func TestMirrorBatchToAServerThatNeverAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the copies' timeout")
	}
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	defer l.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go io.Copy(io.Discard, c)
		}
	}()
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	port := l.Addr().(*net.TCPAddr).Port
	const n = 20
	for i := range n {
		mr.offer(rawCopy(port, "GET", "/c/"+strconv.Itoa(i), ""))
	}
	deadline := time.Now().Add(4 * mirrorTimeout)
	for mr.dropped.Load() < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if s, d := mr.sent.Load(), mr.dropped.Load(); s != 0 || d != n {
		t.Errorf("%d sent, %d dropped; want all %d dropped", s, d, n)
	}
	if c := conns.Load(); c > 2*mirrorWorkers {
		t.Errorf("%d connections for %d copies", c, n)
	}
}

// A response that trickles reaches the client as it comes, whatever its framing, and holds
// its request's copy back no more: the copy is queued as it starts (one read whole is copied
// once it is on its way to the client).
func TestMirrorStreamedResponseReachesTheClientAndTheCopyAtOnce(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var copies atomic.Int64
	addr, r := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			io.Copy(io.Discard, req.Body)
			if name == "shadow" {
				copies.Add(1)
				return
			}
			if req.URL.Path == "/long" { // longer than the router reads whole
				w.Header().Set("Content-Length", strconv.Itoa(2*maxBuffered))
			} // else chunked
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-release
		})
	})
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2", Owner: "me"}})
	for i, tc := range []struct{ method, path string }{
		{http.MethodGet, "/long"},     // the raw path
		{http.MethodGet, "/chunked"},  // the raw path, the response parsed
		{http.MethodPost, "/chunked"}, // the parsing path: a body over maxBuffered
	} {
		var body io.Reader
		if tc.method == http.MethodPost {
			body = bytes.NewReader(make([]byte, 2*maxBuffered))
		}
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, body)
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for copies.Load() < int64(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("%s %s: no copy while its response streams", tc.method, tc.path)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A server that answers a batch slowly, but in turn, gets all of it: what times out is one
// that gives no answer for mirrorTimeout, not a batch longer than that.
func TestMirrorBatchToASlowServer(t *testing.T) {
	port, _ := mirrorServer(t, func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(30 * time.Millisecond)
		io.WriteString(w, "slow\n")
	})
	mr := newMirrorTimed(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"}, mirrorLinger, 300*time.Millisecond)
	defer close(mr.stop)
	const n = 40 // a batch of 1.2 s, four times the timeout
	for i := range n {
		mr.offer(rawCopy(port, "GET", "/c/"+strconv.Itoa(i), ""))
	}
	waitCopies(t, mr, n)
	if d := mr.dropped.Load(); d != 0 {
		t.Errorf("%d of %d dropped", d, n)
	}
}

// The gatherer stops lingering once a batch is queued: a burst does not wait out the linger,
// nor fill the queue while it does.
func TestMirrorLingerEndsWithAFullBatch(t *testing.T) {
	const linger = 5 * time.Second
	port, _ := mirrorServer(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mr := newMirrorTimed(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"}, linger, mirrorTimeout)
	defer close(mr.stop)
	mr.offer(rawCopy(port, "GET", "/first", ""))
	time.Sleep(50 * time.Millisecond) // the gatherer lingers
	for i := range mirrorBatch {
		mr.offer(rawCopy(port, "GET", "/c/"+strconv.Itoa(i), ""))
	}
	deadline := time.Now().Add(linger / 2)
	for mr.sent.Load() < mirrorBatch {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d copies sent after %s: the burst waited for the linger", mr.sent.Load(), mirrorBatch+1, linger/2)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Answers of every framing, pipelined on one connection, are each read whole: plain ones as
// the raw path skips them (a HEAD's length with no body, a 204), others parsed (an early hint,
// chunked). One misread would turn the next answers to garbage: copies sent again on a new
// connection, or waited for and dropped.
func TestMirrorReadsAnswersOfEveryFraming(t *testing.T) {
	answers := map[string]string{
		"/plain":   "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"/head":    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
		"/empty":   "HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n",
		"/hint":    "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"/large":   "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000),
	}
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	defer l.Close()
	var received atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					received.Add(1)
					io.WriteString(c, answers[req.URL.Path])
				}
			}()
		}
	}()
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	port := l.Addr().(*net.TCPAddr).Port
	mr.offer(rawCopy(port, "GET", "/plain", "")) // a fresh connection takes one copy first
	waitCopies(t, mr, 1)
	var n int64 = 1
	for range 3 {
		for path := range answers {
			method := "GET"
			if path == "/head" {
				method = "HEAD"
			}
			mr.offer(rawCopy(port, method, path, ""))
			n++
		}
	}
	waitCopies(t, mr, n)
	if s, d := mr.sent.Load(), mr.dropped.Load(); s != n || d != 0 {
		t.Errorf("%d sent, %d dropped of %d", s, d, n)
	}
	if r := received.Load(); r != n {
		t.Errorf("the server got %d copies of %d: an answer was misread", r, n)
	}
}

// An HTTP/1.0 client (ab, old load balancers' health checks): answered by the origin, the
// connection closed after the answer as HTTP/1.0 wants, and its request copied.
func TestMirrorCopiesAnHTTP10Request(t *testing.T) {
	var mu sync.Mutex
	var seen []seenReq
	addr, r := backends(t, recording(&mu, &seen, 0))
	r.SetMembers([]wire.MeshMember{{Session: "m1", Mirror: true, Shadow: "127.0.0.2", Owner: "me"}})
	for _, req := range []string{"GET /old HTTP/1.0\r\n\r\n", "POST /old-post HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c) // ends: the router closes after the answer
		c.Close()
		if err != nil || !bytes.HasPrefix(got, []byte("HTTP/1.")) || !bytes.HasSuffix(got, []byte("origin /old")) && !bytes.HasSuffix(got, []byte("origin /old-post")) {
			t.Errorf("%q: answered %q, %v", req, got, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Mirrors()["m1"].Sent < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	paths := map[string]string{}
	for _, c := range seen {
		paths[c.path] = string(c.body)
	}
	if len(seen) != 2 || paths["/old"] != "" || paths["/old-post"] != "abc" {
		t.Errorf("copies %+v", seen) // in either order: each may take a worker of its own
	}
}
