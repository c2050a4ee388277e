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
	"sync"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// record serves HTTP/1.1 and h2c on -http and prints one JSON line per request it gets
// (proto, method, path, body length, the mirror's truncation mark), for mirror's tests.
func record(args []string) {
	fs := flag.NewFlagSet("record", flag.ExitOnError)
	addr := fs.String("http", "127.0.0.1:8080", "listen address")
	fs.Parse(args)
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		mu.Lock()
		enc.Encode(map[string]any{"proto": r.Proto, "method": r.Method, "path": r.URL.Path, "len": n,
			"truncated": r.Header.Get("X-Kt-Mirror-Truncated")})
		mu.Unlock()
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
