package main

import (
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
		head, _ := io.ReadAll(io.LimitReader(r.Body, 256))
		rest, _ := io.Copy(io.Discard, r.Body)
		put(map[string]any{"proto": r.Proto, "method": r.Method, "path": r.URL.Path, "len": int64(len(head)) + rest,
			"body": head, "truncated": r.Header.Get("X-Kt-Mirror-Truncated")})
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
