package mux

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns the two ends of a session over loopback TCP.
func pair(t *testing.T) (*Session, *Session) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, server := Client(c), Server(<-accepted)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// streamPair opens a stream on a new session and returns both of its ends.
func streamPair(t *testing.T) (*Stream, *Stream) {
	t.Helper()
	client, server := pair(t)
	accepted := make(chan *Stream, 1)
	go func() {
		st, _ := server.Accept()
		accepted <- st
	}()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	return st, <-accepted
}

// serveEcho answers every stream with what it read, after the reader's half-close.
func serveEcho(s *Session) {
	for {
		st, err := s.Accept()
		if err != nil {
			return
		}
		go func() {
			b, err := io.ReadAll(st)
			if err == nil {
				st.Write(b)
				st.CloseWrite()
			}
			st.Close()
		}()
	}
}

func TestStreamsCarryDataBothWaysWithHalfClose(t *testing.T) {
	client, server := pair(t)
	go serveEcho(server)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := make([]byte, i*9973) // up to 390 KB, across frame and grant sizes
			rand.Read(want)
			st, err := client.Open()
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Close()
			go func() {
				st.Write(want)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("stream %d: %d bytes back of %d, err %v", i, len(got), len(want), err)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for (client.NumStreams() != 0 || server.NumStreams() != 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if client.NumStreams() != 0 || server.NumStreams() != 0 {
		t.Errorf("streams left open: client %d, server %d", client.NumStreams(), server.NumStreams())
	}
}

func TestLargeTransferThroughReadFromKeepsOrder(t *testing.T) {
	client, server := pair(t)
	want := make([]byte, 3*Window+12345) // several windows: the grants must keep it moving
	rand.Read(want)
	go func() {
		st, err := server.Accept()
		if err != nil {
			return
		}
		st.ReadFrom(bytes.NewReader(want))
		st.CloseWrite()
	}()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%d of %d bytes, err %v", len(got), len(want), err)
	}
}

func TestWriterWaitsForTheReadersWindow(t *testing.T) {
	st, peer := streamPair(t)
	wrote := make(chan int, 1)
	go func() {
		n, _ := st.Write(make([]byte, Window+maxPayload))
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("a write of more than the window finished (%d bytes) while nobody read", n)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := io.ReadFull(peer, make([]byte, Window)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-wrote:
		if n != Window+maxPayload {
			t.Fatalf("wrote %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write did not resume after the reader consumed the window")
	}
}

func TestCloseWithUnreadDataResetsThePeer(t *testing.T) {
	st, peer := streamPair(t)
	peer.Write([]byte("a response nobody reads"))
	for {
		st.mu.Lock()
		queued := st.queued
		st.mu.Unlock()
		if queued > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(peer)
		readErr <- err
	}()
	st.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, ErrReset) {
			t.Fatalf("peer read: %v, want ErrReset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer never saw the reset")
	}
	if _, err := peer.Write([]byte("x")); !errors.Is(err, ErrReset) {
		t.Fatalf("peer write after reset: %v", err)
	}
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestCloseWithNothingUnreadEndsThenResetsLateWrites(t *testing.T) {
	st, peer := streamPair(t)
	st.Write([]byte("request"))
	st.Close()
	if b, err := io.ReadAll(peer); err != nil || string(b) != "request" {
		t.Fatalf("peer read %q, %v; want the request, then the end", b, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := peer.Write([]byte("a late response"))
		if errors.Is(err, ErrReset) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("writes to a closed stream: %v, want ErrReset", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCloseAfterBothFinishedDoesNotReset(t *testing.T) {
	client, server := pair(t)
	result := make(chan error, 1)
	go func() {
		st, _ := server.Accept()
		io.ReadAll(st)
		st.Write([]byte("reply"))
		st.CloseWrite()
		// The client closes after reading the reply; this side must not see a reset, only the end.
		_, err := st.Read(make([]byte, 1))
		result <- err
	}()
	st, _ := client.Open()
	st.Write([]byte("request"))
	st.CloseWrite()
	if b, err := io.ReadAll(st); err != nil || string(b) != "reply" {
		t.Fatalf("%q %v", b, err)
	}
	st.Close()
	if err := <-result; err != io.EOF {
		t.Fatalf("server read after a clean close: %v, want EOF", err)
	}
}

func TestSessionEndFailsEveryStream(t *testing.T) {
	client, server := pair(t)
	go func() { server.Accept() }()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		readErr <- err
	}()
	server.Close()
	select {
	case err := <-readErr:
		if err == nil || err == io.EOF {
			t.Fatalf("read on a dead session: %v, want an error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read on a dead session never returned")
	}
	<-client.Done()
	if _, err := client.Open(); err == nil {
		t.Fatal("Open on a dead session succeeded")
	}
}

func TestOverrunningTheWindowEndsTheSession(t *testing.T) {
	a, b := net.Pipe()
	server := Server(b)
	defer server.Close()
	go func() {
		hdr := func(typ byte, n uint32) []byte {
			return []byte{typ, 0, 0, 0, 1, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		}
		a.Write(hdr(frameOpen, 0))
		payload := make([]byte, maxPayload)
		for i := 0; i <= Window/maxPayload; i++ {
			if _, err := a.Write(append(hdr(frameData, maxPayload), payload...)); err != nil {
				return
			}
		}
	}()
	select {
	case <-server.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a peer that ignored the window was not cut off")
	}
}

func TestDeferredOpenTravelsWithTheFirstWrite(t *testing.T) {
	a, b := net.Pipe()
	frames := &countingConn{Conn: a}
	client, server := Client(frames), Server(b)
	defer client.Close()
	defer server.Close()
	st, err := client.OpenDeferred()
	if err != nil {
		t.Fatal(err)
	}
	if frames.writes.Load() != 0 {
		t.Fatal("a deferred open wrote before the first data")
	}
	st.Write([]byte("hello"))
	peer, err := server.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b5 := make([]byte, 5)
	if _, err := io.ReadFull(peer, b5); err != nil || string(b5) != "hello" {
		t.Fatalf("%q %v", b5, err)
	}
	if n := frames.writes.Load(); n != 1 {
		t.Errorf("open and first data took %d writes, want 1", n)
	}
}

type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestMoveEndsReadsWithErrMovedAfterTheData(t *testing.T) {
	client, server := pair(t)
	go func() {
		st, err := server.Accept()
		if err != nil {
			return
		}
		st.Write([]byte("first part"))
		st.Move(7)
	}()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if !errors.Is(err, ErrMoved) || string(got) != "first part" {
		t.Fatalf("read %q, %v; want the data, then ErrMoved", got, err)
	}
	if arg := st.MoveArg(); arg != 7 {
		t.Errorf("move argument %d, want the 7 sent", arg)
	}
}

// A stream's queue is bounded by its window whatever the frames: empty data frames, which
// the window does not count, and one-byte frames, which cost a chunk each, used to grow the
// peer's heap without bound (4 M empty frames: +284 MiB).
func TestTinyFramesDoNotGrowTheQueue(t *testing.T) {
	a, b := net.Pipe()
	server := Server(b)
	defer server.Close()
	defer a.Close()
	hdr := func(typ byte, n uint32) []byte {
		return []byte{typ, 0, 0, 0, 1, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	go func() {
		a.Write(hdr(frameOpen, 0))
		buf := bytes.Repeat(hdr(frameData, 0), 64<<10)
		for i := 0; i < 64; i++ { // 4 M empty frames
			if _, err := a.Write(buf); err != nil {
				return
			}
		}
		one := bytes.Repeat(append(hdr(frameData, 1), 'x'), 64<<10)
		for i := 0; i < Window/(64<<10); i++ { // a window's worth of 1-byte frames
			if _, err := a.Write(one); err != nil {
				return
			}
		}
		a.Write(hdr(frameFin, 0))
	}()
	st, err := server.Accept()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st.mu.Lock()
		queued, chunks, fin := st.queued, len(st.queue), st.finRecv
		st.mu.Unlock()
		if chunks > Window/smallChunk+1 {
			t.Fatalf("%d chunks queued for %d bytes", chunks, queued)
		}
		if fin {
			if queued != Window {
				t.Errorf("queued %d bytes, want %d", queued, Window)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the frames did not arrive (queued %d)", queued)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b2, err := io.ReadAll(st)
	if err != nil || len(b2) != Window || b2[0] != 'x' {
		t.Errorf("read %d bytes, %v", len(b2), err)
	}
}

// The agent refuses a connection whose first bytes came with the request: it answers and
// closes with those bytes unread, which resets the stream. The answer must still be read.
func TestDataBeforeAResetIsStillRead(t *testing.T) {
	st, peer := streamPair(t)
	st.Write([]byte("early bytes nobody reads"))
	waitFor(t, func() bool { peer.mu.Lock(); defer peer.mu.Unlock(); return peer.queued > 0 })
	peer.Write([]byte("refused"))
	peer.Close()
	waitFor(t, func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.err != nil })
	b, err := io.ReadAll(st)
	if string(b) != "refused" || !errors.Is(err, ErrReset) {
		t.Fatalf("read %q, %v; want the answer, then ErrReset", b, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
