package portforward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/spdystream"
	corev1 "k8s.io/api/core/v1"
)

// kubelet is the server end that the tests talk to: spdystream, as the kubelet's and the
// container runtime's port-forward servers use, pairing each data stream with its error
// stream by request id. serve gets the pair once both have arrived.
type kubelet struct {
	raw   net.Conn
	conn  *spdystream.Connection
	mu    sync.Mutex
	errs  map[string]chan *spdystream.Stream
	refus bool // refuse data streams
}

// errStream returns the channel that carries request id's error stream: spdystream hands
// a pair's two streams to different workers, so either may come first.
func (k *kubelet) errStream(id string) chan *spdystream.Stream {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.errs[id] == nil {
		k.errs[id] = make(chan *spdystream.Stream, 1)
	}
	return k.errs[id]
}

func startKubelet(t *testing.T, serve func(data, errs *spdystream.Stream)) (*kubelet, *session) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := spdystream.NewConnection(server, true)
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{raw: server, conn: sc, errs: map[string]chan *spdystream.Stream{}}
	go sc.Serve(func(st *spdystream.Stream) {
		h := st.Headers()
		id := h.Get(corev1.PortForwardRequestIDHeader)
		if h.Get(corev1.StreamType) == corev1.StreamTypeError {
			st.SendReply(http.Header{}, false)
			k.errStream(id) <- st
			return
		}
		if k.refus {
			st.Refuse()
			return
		}
		st.SendReply(http.Header{}, false)
		go func() { serve(st, <-k.errStream(id)) }() // not in spdystream's worker, which the error stream may queue behind
	})
	s, err := newSession(client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); sc.Close() })
	return k, s
}

func dialOn(t *testing.T, s *session) *Conn {
	t.Helper()
	d := &Dialer{Namespace: "ns", Pod: "pod"}
	c, err := d.open(context.Background(), s, 8080)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*Conn)
}

// echo copies what comes to what goes and ends with FIN.
func echo(data, _ *spdystream.Stream) {
	io.Copy(data, data)
	data.Close()
}

func TestSessionEchoBothWaysWithHalfClose(t *testing.T) {
	_, s := startKubelet(t, echo)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialOn(t, s)
			payload := make([]byte, 1<<20+i*4097) // frames of every size, the last one short
			rand.New(rand.NewSource(int64(i))).Read(payload)
			go func() {
				c.Write(payload)
				c.CloseWrite()
			}()
			var got bytes.Buffer
			if i%2 == 0 {
				_, err := c.WriteTo(&got)
				if err != nil {
					t.Error(err)
				}
			} else if _, err := io.Copy(&got, struct{ io.Reader }{c}); err != nil { // Read only
				t.Error(err)
			}
			if sha256.Sum256(got.Bytes()) != sha256.Sum256(payload) {
				t.Errorf("stream %d: %d bytes back of %d, or different ones", i, got.Len(), len(payload))
			}
		}()
	}
	wg.Wait()
}

func TestSessionRefusedStream(t *testing.T) {
	k, s := startKubelet(t, echo)
	k.refus = true
	d := &Dialer{Namespace: "ns", Pod: "pod"}
	if _, err := d.open(context.Background(), s, 8080); !errors.Is(err, errStreamReset) {
		t.Fatalf("open on a refusing kubelet: %v, want %v", err, errStreamReset)
	}
	if !s.alive() {
		t.Fatal("a refused stream ended the session")
	}
}

func TestSessionKubeletMessage(t *testing.T) {
	_, s := startKubelet(t, func(data, errs *spdystream.Stream) {
		errs.Write([]byte("failed to connect to localhost:8080 inside namespace: connection refused"))
		errs.Close()
		data.Close()
	})
	c := dialOn(t, s)
	_, err := c.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Read: %v, want the kubelet's message", err)
	}
}

// A tunnel that drops mid-transfer must not look like a transfer that ended: neither when
// the server says GOAWAY nor when its connection just ends between two frames.
func TestSessionEndIsNotEOF(t *testing.T) {
	for name, drop := range map[string]func(*kubelet, *session){
		"goaway":    func(k *kubelet, s *session) { k.conn.Close(); s.conn.Close() },
		"tcp close": func(k *kubelet, _ *session) { k.raw.Close() },
	} {
		t.Run(name, func(t *testing.T) {
			k, s := startKubelet(t, func(data, _ *spdystream.Stream) {
				data.Write(make([]byte, 100000))
			})
			c := dialOn(t, s)
			if _, err := io.ReadFull(c, make([]byte, 100000)); err != nil {
				t.Fatal(err)
			}
			drop(k, s)
			_, err := io.Copy(io.Discard, c)
			if err == nil {
				t.Fatal("a dropped tunnel read as a clean end of stream")
			}
			if s.alive() {
				t.Fatal("session alive after its connection closed")
			}
			d := &Dialer{Namespace: "ns", Pod: "pod"}
			if _, err := d.open(context.Background(), s, 8080); err == nil {
				t.Fatal("a stream opened on a dead session")
			}
		})
	}
}

func TestSessionAnswersServerPing(t *testing.T) {
	k, _ := startKubelet(t, echo)
	done := make(chan error, 1)
	go func() { _, err := k.conn.Ping(); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to the server's ping")
	}
}

// A reader that stops holds its stream's frames, up to streamBuffer, and then the session;
// Close releases them.
func TestSessionCloseReleasesAStalledReader(t *testing.T) {
	_, s := startKubelet(t, func(data, _ *spdystream.Stream) {
		for range 4 * streamBuffer / maxDataFrame { // in frames of the kubelet's size
			if _, err := data.Write(make([]byte, maxDataFrame)); err != nil {
				return
			}
		}
	})
	c := dialOn(t, s)
	time.Sleep(200 * time.Millisecond)
	st := c.data.(*spdyStream)
	st.mu.Lock()
	queued := st.queued
	st.mu.Unlock()
	if queued <= 0 || queued > streamBuffer+maxDataFrame {
		t.Fatalf("%d bytes queued for a stalled reader; want some, at most %d", queued, streamBuffer+maxDataFrame)
	}
	c.Close()
	c2 := dialOn(t, s) // the read loop runs again: the new stream gets its data
	if _, err := io.ReadFull(c2, make([]byte, 3*streamBuffer)); err != nil {
		t.Fatal(err)
	}
}

// shortPings makes pings and the silence limit fast for a test.
func shortPings(t *testing.T) {
	p, s := pingPeriod, silentAfter
	pingPeriod, silentAfter = 20*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { pingPeriod, silentAfter = p, s })
}

// The kubelet answers pings: an idle session lives on.
func TestSessionIdleButAnsweredLivesOn(t *testing.T) {
	shortPings(t)
	_, s := startKubelet(t, echo)
	time.Sleep(10 * silentAfter)
	if !s.alive() {
		t.Fatalf("an idle session whose pings are answered ended: %v", s.closedErr())
	}
	c := dialOn(t, s)
	c.Write([]byte("still here"))
	b := make([]byte, 10)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "still here" {
		t.Fatalf("echo after idling: %q %v", b, err)
	}
}

// A peer that takes everything and says nothing (the network went quiet) ends the session,
// and a stream that waits for its reply learns it then, not after replyTimeout.
func TestSessionEndsWhenTheNetworkGoesSilent(t *testing.T) {
	shortPings(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSession(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Now()
	_, _, err = s.open(context.Background(), 8080, "1")
	if !errors.Is(err, errSilent) || s.alive() {
		t.Fatalf("open on a silent peer: %v (alive %v), want %v", err, s.alive(), errSilent)
	}
	if d := time.Since(t0); d > 10*silentAfter {
		t.Errorf("noticed the silence after %s", d)
	}
}

// A stream whose reader pauses (a developer stopped in a debugger) holds up the read loop;
// that quiet is not the network's and must not end the session.
func TestSessionStalledReaderIsNotSilence(t *testing.T) {
	shortPings(t)
	payload := make([]byte, 4*streamBuffer)
	rand.New(rand.NewSource(1)).Read(payload)
	_, s := startKubelet(t, func(data, _ *spdystream.Stream) {
		data.Write(payload)
		data.Close()
	})
	c := dialOn(t, s)
	time.Sleep(10 * silentAfter) // nothing read: the read loop waits on this stream
	if !s.alive() {
		t.Fatalf("the session ended while a reader paused: %v", s.closedErr())
	}
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after the pause: %d of %d bytes, %v", len(got), len(payload), err)
	}
}

// Counts in a control frame are not trusted: a 12-byte SETTINGS frame claiming 0x7fffffff
// entries made spdystream's reader allocate 24 GiB. kt reads what it needs itself; the
// session lives on, and a control frame too large to be the API server's ends it.
func TestSessionBoundsControlFrames(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	s, err := newSession(a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go io.Copy(io.Discard, b) // the session's pings
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	settings := []byte{0x80, 3, 0, 4, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff}
	if _, err := b.Write(settings); err != nil {
		t.Fatal(err)
	}
	// a SYN_REPLY whose (uncompressed, invalid) header block claims 2^32-1 headers
	reply := []byte{0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}
	if _, err := b.Write(reply); err != nil {
		t.Fatal(err)
	}
	ping := []byte{0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2}
	b.Write(ping)
	time.Sleep(100 * time.Millisecond)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("reading three small frames allocated %d MiB", grew>>20)
	}
	if !s.alive() {
		t.Fatalf("the session ended on frames it can ignore: %v", s.err)
	}
	big := append([]byte{0x80, 3, 0, 4, 0, 0x10, 0, 0}, make([]byte, 1<<20)...)
	go b.Write(big)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a 1 MiB control frame did not end the session")
	}
}
