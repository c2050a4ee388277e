package main

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// echo answers each line it reads, then half-closes when the client does.
func echo(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func proxy(t *testing.T, to string, oneWay time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, to, oneWay)
	return l.Addr().String()
}

func TestRoundTripCostsTheDelayAndOrderIsKept(t *testing.T) {
	const oneWay = 30 * time.Millisecond
	c, err := net.Dial("tcp", proxy(t, echo(t), oneWay))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := range 3 { // each exchange waits for its answer: one round trip each
		t0 := time.Now()
		if _, err := c.Write([]byte(strconv.Itoa(i) + "\n")); err != nil {
			t.Fatal(err)
		}
		l, err := r.ReadString('\n')
		if err != nil || l != strconv.Itoa(i)+"\n" {
			t.Fatalf("got %q, %v", l, err)
		}
		if d := time.Since(t0); d < 2*oneWay {
			t.Fatalf("a round trip took %v, less than the %v added", d, 2*oneWay)
		}
	}
	// Back to back: 2000 writes arrive whole and in order, then the half-close.
	go func() {
		for i := range 2000 {
			c.Write([]byte(strconv.Itoa(i) + "\n"))
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	for i := range 2000 {
		l, err := r.ReadString('\n')
		if err != nil || l != strconv.Itoa(i)+"\n" {
			t.Fatalf("line %d: got %q, %v", i, l, err)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the half-close: %v, want EOF", err)
	}
}

func TestNoDelay(t *testing.T) {
	c, err := net.Dial("tcp", proxy(t, echo(t), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x\n"))
	if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || l != "x\n" {
		t.Fatalf("got %q, %v", l, err)
	}
}
