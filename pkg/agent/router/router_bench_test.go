package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
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
