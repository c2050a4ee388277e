package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// BenchmarkRouterKeepAlive compares keep-alive requests straight to a server and through the
// router, one at a time (latency) and in parallel (CPU per request), all on loopback.
func BenchmarkRouterKeepAlive(b *testing.B) {
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go http.Serve(origin, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from origin\n") }))
	port := origin.Addr().(*net.TCPAddr).Port
	r := New("127.0.0.1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, l, port)
	for _, tc := range []struct{ name, url string }{
		{"direct", "http://" + origin.Addr().String() + "/"},
		{"router", "http://" + l.Addr().String() + "/"},
	} {
		b.Run(tc.name+"/sequential", func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			for i := 0; i < b.N; i++ {
				resp, err := c.Get(tc.url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(tc.url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkMirrorCopies is the router's side of a copy: queued, gathered, sent pipelined and
// its answer read, to a server on loopback.
func BenchmarkMirrorCopies(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		b.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "answer\n") }))
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	mr := newMirror(wire.MeshMember{Session: "m1", Mirror: true, Shadow: "127.0.0.2"})
	defer close(mr.stop)
	c := copyReq{port: port, method: "GET", raw: []byte("GET /m/1 HTTP/1.1\r\nHost: web\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for mr.queued.Load() > 64<<10 || len(mr.queue) > mirrorQueue/2 {
			time.Sleep(time.Millisecond)
		}
		mr.offer(c)
	}
	for mr.sent.Load()+mr.dropped.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	if d := mr.dropped.Load(); d > 0 {
		b.Fatalf("%d of %d dropped", d, b.N)
	}
}
