package router

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
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
