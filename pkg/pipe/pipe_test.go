package pipe

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// listenPair returns both ends of a loopback TCP connection.
func listenPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// Pieces the local side writes close together arrive at the other side in one read; what
// goes the other way, and a half-close each way, pass as with Conns.
func TestGatheringJoinsABurst(t *testing.T) {
	remote, relayA := listenPair(t) // remote: the shadow's end
	relayB, local := listenPair(t)  // local: the local server's end
	done := make(chan struct{})
	go func() { Gathering(relayA, relayB, 20*time.Millisecond); close(done) }()

	if _, err := remote.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(local, buf); err != nil || string(buf) != "request" {
		t.Fatalf("local read %q, %v", buf, err)
	}
	first := make(chan string, 1)
	go func() { // reads as the answers come, as the shadow does
		got := make([]byte, 1024)
		remote.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := remote.Read(got)
		first <- string(got[:n])
	}()
	time.Sleep(10 * time.Millisecond) // the reader waits
	for range 10 {                    // ten answers, written apart
		local.Write([]byte("answer;"))
		time.Sleep(time.Millisecond)
	}
	if f := <-first; f != string(bytes.Repeat([]byte("answer;"), 10)) {
		t.Fatalf("first read %q: the burst was not gathered", f)
	}
	got := make([]byte, 1024)

	local.(*net.TCPConn).CloseWrite()
	if n, err := remote.Read(got); err != io.EOF {
		t.Fatalf("after the local half-close: %q, %v; want EOF", got[:n], err)
	}
	remote.Write([]byte("more"))
	if _, err := io.ReadFull(local, buf[:4]); err != nil || string(buf[:4]) != "more" {
		t.Fatalf("after the half-close the other way still passes: %q, %v", buf[:4], err)
	}
	remote.(*net.TCPConn).CloseWrite()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Gathering did not return after both sides ended")
	}
}

// A lone answer goes on after the linger, not held until more comes.
func TestGatheringSendsALoneAnswer(t *testing.T) {
	remote, relayA := listenPair(t)
	relayB, local := listenPair(t)
	go Gathering(relayA, relayB, 5*time.Millisecond)
	t0 := time.Now()
	local.Write([]byte("one"))
	got := make([]byte, 16)
	remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := remote.Read(got)
	if err != nil || string(got[:n]) != "one" {
		t.Fatalf("read %q, %v", got[:n], err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("a lone answer took %s", d)
	}
}
