package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// record serves HTTP/1.1 and h2c on -http and prints one JSON line per request it gets
// (proto, method, path, body length, its first 256 bytes, the mirror's truncation mark), and
// one per text message of a WebSocket (proto "websocket"), and one per connection that is not
// HTTP (its first line is no request line, "METHOD TARGET HTTP/…"): proto "tcp", the bytes the client sent
// until it closed its side. A gRPC request's messages are each a line too (proto "grpc-message",
// with the time it was read, "at", in Unix nanoseconds), as they come, before the request's own
// line at its end. For mirror's tests.
func record(args []string) {
	fs := flag.NewFlagSet("record", flag.ExitOnError)
	addr := fs.String("http", "127.0.0.1:8080", "listen address")
	fs.Parse(args)
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	put := func(v map[string]any) {
		mu.Lock()
		enc.Encode(v)
		mu.Unlock()
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			recordWS(w, r, put)
			return
		}
		body := io.Reader(r.Body)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			body = grpcMessages(r, put)
		}
		head, _ := io.ReadAll(io.LimitReader(body, 256))
		rest, _ := io.Copy(io.Discard, body)
		put(map[string]any{"proto": r.Proto, "method": r.Method, "path": r.URL.Path, "len": int64(len(head)) + rest,
			"body": head, "truncated": r.Header.Get("X-Kt-Mirror-Truncated")})
		io.WriteString(w, "recorded\n")
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("testapp record on %s", *addr)
	httpConns := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go sniff(c, httpConns, put)
		}
	}()
	go func() { log.Fatal(http.Serve(chanListener{l, httpConns}, h2c.NewHandler(h, &http2.Server{}))) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

// recordWS accepts a WebSocket and records each text message the client sends.
func recordWS(w http.ResponseWriter, r *http.Request, put func(map[string]any)) {
	conn, rw, err := acceptWS(w, r)
	if err != nil {
		return
	}
	defer conn.Close()
	for {
		op, payload, err := readWSFrame(rw.Reader)
		if err != nil || op == 8 {
			return
		}
		if op == 1 {
			put(map[string]any{"proto": "websocket", "method": "MESSAGE", "path": r.URL.Path, "len": len(payload), "body": payload})
		}
	}
}

// sniff hands an HTTP connection to the server and records any other.
func sniff(c net.Conn, httpConns chan<- net.Conn, put func(map[string]any)) {
	br := bufio.NewReader(c)
	b, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	if b[0] >= 'A' && b[0] <= 'Z' {
		// An upper-case word may start a text protocol's line too ("SET k v"): HTTP only if
		// the first line ends as a request line does.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			b, _ := br.Peek(br.Buffered())
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				if f := strings.Fields(string(b[:i])); len(f) == 3 && strings.HasPrefix(f[2], "HTTP/") {
					c.SetReadDeadline(time.Time{})
					httpConns <- bufferedConn{c, br}
					return
				}
				break
			}
			if _, err := br.Peek(len(b) + 1); err != nil {
				break
			}
		}
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	var head bytes.Buffer
	n, _ := io.Copy(&head, io.LimitReader(br, 256))
	rest, _ := io.Copy(io.Discard, br)
	put(map[string]any{"proto": "tcp", "method": "", "path": "", "len": n + rest, "body": head.Bytes()})
}

type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// chanListener accepts the connections sniff found to be HTTP.
type chanListener struct {
	net.Listener
	conns <-chan net.Conn
}

func (l chanListener) Accept() (net.Conn, error) { return <-l.conns, nil }

// tcpSend sends data and a newline to addr, closes its side and prints what comes back.
func tcpSend(addr, data string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, data+"\n"); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	_, err = io.Copy(os.Stdout, c)
	return err
}

// grpcMessages reads a gRPC request's body as it comes and records each length-prefixed
// message as it is read; what it returns reads the same bytes, for the request's own line.
func grpcMessages(r *http.Request, put func(map[string]any)) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		br := bufio.NewReader(io.TeeReader(r.Body, pw))
		var hdr [5]byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				break
			}
			n := int64(hdr[1])<<24 | int64(hdr[2])<<16 | int64(hdr[3])<<8 | int64(hdr[4])
			msg, _ := io.ReadAll(io.LimitReader(br, min(n, 256)))
			if _, err := io.CopyN(io.Discard, br, n-int64(len(msg))); err != nil {
				break
			}
			put(map[string]any{"proto": "grpc-message", "method": "MESSAGE", "path": r.URL.Path, "len": n,
				"body": msg, "at": time.Now().UnixNano()})
		}
		io.Copy(io.Discard, br)
		pw.Close()
	}()
	return pr
}
