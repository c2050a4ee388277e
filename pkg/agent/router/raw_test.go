package router

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRawHeadLeavesAnythingUnusualToTheParser(t *testing.T) {
	for _, tc := range []struct {
		head   string
		ok     bool
		length int64
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, -1},
		{"POST / HTTP/1.1\r\nHost: x\r\ncontent-length:  5 \r\n\r\n", true, 5},
		// Framing a smuggler could make two proxies read differently: the parser decides.
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false, 0},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", false, 0},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", false, 0},
		// A line ending in LF alone: here the first head ends early, and what looks like its
		// end belongs to a second request.
		{"GET / HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", false, 0},
		// Connection-level headers are per hop.
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false, 0},
	} {
		h, ok := parseRawHead([]byte(tc.head))
		if ok != tc.ok || ok && h.length != tc.length {
			t.Errorf("%q: ok %v length %d, want %v %d", tc.head, ok, h.length, tc.ok, tc.length)
		}
	}
}

// TestResponsesOfKnownLengthKeepTheConnection sends, on one client connection, requests whose
// responses the raw path relays (small, large, HEAD, 204) and checks each arrives whole.
func TestResponsesOfKnownLengthKeepTheConnection(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB: streamed, not buffered
	addr, r := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/big":
				w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				w.Write(big)
			case "/none":
				w.WriteHeader(http.StatusNoContent)
			default:
				w.Header().Set("Content-Length", "7")
				io.WriteString(w, name[:6]+"\n")
			}
		})
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for _, tc := range []struct{ method, path, mark, want string }{
		{"GET", "/", "", "origin\n"},
		{"GET", "/big", "", string(big)},
		{"HEAD", "/", "dev1", ""},
		{"GET", "/none", "", ""},
		{"GET", "/", "dev1", "shadow\n"},
		{"POST", "/", "", "origin\n"},
	} {
		req := tc.method + " " + tc.path + " HTTP/1.1\r\nHost: x\r\n"
		if tc.mark != "" {
			req += "version: " + tc.mark + "\r\n"
		}
		if tc.method == "POST" {
			req += "Content-Length: 4\r\n\r\nbody"
		} else {
			req += "\r\n"
		}
		io.WriteString(conn, req)
		resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != tc.want {
			t.Fatalf("%s %s: got %d bytes (%v), want %d", tc.method, tc.path, len(b), err, len(tc.want))
		}
		if resp.Close || resp.Header.Get("Connection") != "" {
			t.Fatalf("%s %s: connection not kept: %v", tc.method, tc.path, resp.Header)
		}
	}
	if n := r.rawRequests.Load(); n != 6 {
		t.Fatalf("%d of 6 requests took the raw path", n)
	}
}

// TestBareLineFeedsDoNotStall: a head whose lines end in LF alone never shows a CRLF CRLF; the
// raw path must hand it to the parser at once rather than wait for more bytes.
func TestBareLineFeedsDoNotStall(t *testing.T) {
	addr, _ := backends(t, echoName)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /lf HTTP/1.1\nHost: x\nVersion: dev1\n\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); !bytes.HasPrefix(b, []byte("shadow GET /lf")) {
		t.Fatalf("got %q", b)
	}
}

// TestIdleConnectionClosedByTheServerIsNotReused: the pool checks, without waiting, that a
// kept connection is still open before it hands it out.
func TestIdleConnectionClosedByTheServerIsNotReused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: l.Addr().String(), conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}
	if !u.open() {
		t.Fatal("an open connection reported closed")
	}
	(<-accepted).Close()
	time.Sleep(50 * time.Millisecond)
	if u.open() {
		t.Fatal("a connection the server closed reported open")
	}
	var p pool
	u.idle = time.Now()
	p.put(u)
	if got := p.get(u.addr); got != nil {
		t.Fatal("the pool handed out a closed connection")
	}
}

// TestOnlyRepeatableRequestsAreRetried: when a kept upstream connection breaks under a
// request, a GET is sent again on a new connection, a POST is not (the server may have acted
// on it): the client gets 502 Bad Gateway.
func TestOnlyRepeatableRequestsAreRetried(t *testing.T) {
	var drop atomic.Bool
	addr, _ := backends(t, func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			if r.URL.Path == "/drop" && drop.CompareAndSwap(true, false) {
				c, _, _ := http.NewResponseController(w).Hijack()
				c.Close() // read the request, answer nothing
				return
			}
			io.WriteString(w, "ok")
		})
	})
	for _, tc := range []struct {
		method    string
		keepAlive bool // a kept client connection takes the raw path, "Connection: close" the parser
		want      int
	}{
		{"GET", true, http.StatusOK}, {"POST", true, http.StatusBadGateway},
		{"GET", false, http.StatusOK}, {"POST", false, http.StatusBadGateway},
	} {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: !tc.keepAlive}}
		if got := get(t, c, "http://"+addr+"/warm"); got != "ok" { // leaves a kept upstream connection
			t.Fatalf("warm-up: %q", got)
		}
		drop.Store(true)
		var body io.Reader
		if tc.method == "POST" {
			body = strings.NewReader("x")
		}
		req, _ := http.NewRequest(tc.method, "http://"+addr+"/drop", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s (client keep-alive %v) on a kept connection that broke: %d, want %d", tc.method, tc.keepAlive, resp.StatusCode, tc.want)
		}
	}
}
