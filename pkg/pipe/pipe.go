// Package pipe joins two connections. It has no dependencies beyond the standard library, so
// that the client and the shadow agent share it.
package pipe

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
)

type closeWriter interface{ CloseWrite() error }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Conns copies both ways until both directions end, passing a half-close on. A failing
// write on one side closes both.
func Conns(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(dst, src, *bp)
		bufPool.Put(bp)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			cw.CloseWrite()
		} else {
			dst.Close()
			src.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// OneProcessor runs the Go scheduler on one processor (GOMAXPROCS=1) unless the user set
// GOMAXPROCS. A relay is a chain of hand-offs (tunnel reader, connection, TCP stack,
// device writer): on one processor each is a goroutine switch, on several most are a
// thread wake-up on another core. On one processor kt moved more data with a quarter less
// CPU (docs/benchmarks.md), and it leaves the other cores to the user's IDE and build.
func OneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
