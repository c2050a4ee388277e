package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// record serves HTTP/1.1 and h2c on -http and prints one JSON line per request it gets
// (proto, method, path, body length, its first 256 bytes, the mirror's truncation mark), and
// one per text message of a WebSocket (proto "websocket"), for mirror's tests.
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
		var head bytes.Buffer
		n, _ := io.Copy(io.Discard, io.TeeReader(r.Body, &limitedBuffer{&head, 256}))
		put(map[string]any{"proto": r.Proto, "method": r.Method, "path": r.URL.Path, "len": n,
			"body": head.Bytes(), "truncated": r.Header.Get("X-Kt-Mirror-Truncated")})
		io.WriteString(w, "recorded\n")
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("testapp record on %s", *addr)
	go func() { log.Fatal(http.Serve(l, h2c.NewHandler(h, &http2.Server{}))) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

// recordWS accepts a WebSocket and records each text message the client sends.
func recordWS(w http.ResponseWriter, r *http.Request, put func(map[string]any)) {
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
	rw.Flush()
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

// limitedBuffer keeps the first max bytes written to it and accepts the rest.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
