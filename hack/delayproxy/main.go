// Command delayproxy is the benchmarks' slow link: a TCP proxy that delays every byte by half
// a round-trip time in each direction and keeps their order, as a long path does, for a
// kernel without netem. make bench-wan puts it between the laptop and the API server.
//
//	delayproxy -listen 10.243.1.1:16443 -to 127.0.0.1:6443 -rtt 40ms
//
// A chunk read from one side is written to the other once rtt/2 has passed since it was read,
// so a request and its answer cost one rtt more than without the proxy, and data sent
// back to back stays back to back (the link's bandwidth is not limited).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "", "address to listen on (host:port)")
	to := flag.String("to", "", "address to forward to (host:port)")
	rtt := flag.Duration("rtt", 40*time.Millisecond, "round-trip time to add: half in each direction")
	flag.Parse()
	if *listen == "" || *to == "" || *rtt < 0 {
		fmt.Fprintln(os.Stderr, "usage: delayproxy -listen HOST:PORT -to HOST:PORT [-rtt 40ms]")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("delaying %s -> %s by %v a round trip\n", l.Addr(), *to, *rtt)
	log.Fatal(Serve(l, *to, *rtt/2))
}

// Serve proxies each connection accepted on l to addr, delaying each direction by oneWay.
func Serve(l net.Listener, addr string, oneWay time.Duration) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			up, err := net.Dial("tcp", addr)
			if err != nil {
				log.Printf("dial %s: %v", addr, err)
				c.Close()
				return
			}
			done := make(chan struct{}, 2)
			go func() { delay(up, c, oneWay); done <- struct{}{} }()
			go func() { delay(c, up, oneWay); done <- struct{}{} }()
			<-done
			<-done
			c.Close()
			up.Close()
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// delay copies src to dst, each chunk oneWay after it was read. The queue is bounded (about
// 64 MiB in flight), so a reader that outruns the delay waits, as a full link would make it.
func delay(dst, src net.Conn, oneWay time.Duration) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(oneWay)}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					log.Printf("read: %v", err)
				}
				q <- chunk{nil, time.Now().Add(oneWay)} // the end, delayed as the data
				return
			}
		}
	}()
	failed := false
	for ch := range q {
		if failed {
			continue // drain, so that the reader is not stuck on a full queue
		}
		time.Sleep(time.Until(ch.at))
		if ch.b == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			continue
		}
		if _, err := dst.Write(ch.b); err != nil {
			failed = true
			src.Close()
		}
	}
}
