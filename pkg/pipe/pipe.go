// Package pipe joins two connections. It has no dependencies beyond the standard library, so
// that the client and the shadow agent share it.
package pipe

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
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

// Gathering is Conns with what comes from b gathered before it goes to a: after each read,
// b is read on until linger passes with nothing more or the buffer is half full, and what
// came goes in one write. For a peer nobody waits on (a mirror's local server, whose answers
// are dropped), a burst of answers then crosses each hop back as one piece instead of many.
func Gathering(a, b net.Conn, linger time.Duration) {
	var wg sync.WaitGroup
	wg.Add(2)
	end := func(dst, src net.Conn, err error) {
		if cw, ok := dst.(closeWriter); ok && err == nil {
			cw.CloseWrite()
		} else {
			dst.Close()
			src.Close()
		}
	}
	go func() {
		defer wg.Done()
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(b, a, *bp)
		bufPool.Put(bp)
		end(b, a, err)
	}()
	go func() {
		defer wg.Done()
		bp := bufPool.Get().(*[]byte)
		err := gather(a, b, *bp, linger)
		bufPool.Put(bp)
		end(a, b, err)
	}()
	wg.Wait()
	a.Close()
	b.Close()
}

// gather copies src to dst as Gathering says; nil at src's end.
func gather(dst, src net.Conn, buf []byte, linger time.Duration) error {
	for {
		n, err := src.Read(buf)
		for err == nil && n < len(buf)/2 {
			src.SetReadDeadline(time.Now().Add(linger))
			var m int
			m, err = src.Read(buf[n:])
			n += m
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			err = src.SetReadDeadline(time.Time{})
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
