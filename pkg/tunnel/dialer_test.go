package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/agent"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// fakeAgent runs the agent's flow server on loopback TCP connections, as the agent does at
// the end of port-forward streams, and counts the streams opened to each port. kill closes
// every stream opened so far.
type fakeAgent struct {
	flows   *agent.Flows
	l       net.Listener
	dials   atomic.Int32 // to the mux port
	moves   atomic.Int32 // to the move port
	moved   atomic.Int64 // bytes the agent sent on move-port streams
	movedUp atomic.Int64 // bytes the agent received on them
	older   bool         // its Moves do not offer to take uploads
	dialMu  sync.Mutex   // one dial and its accept at a time
	mu      sync.Mutex
	conns   []net.Conn
}

func newFakeAgent(t *testing.T) *fakeAgent {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &fakeAgent{flows: agent.NewFlows(), l: l}
}

func (a *fakeAgent) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	if port != wire.MuxPort && port != wire.MovePort {
		return nil, fmt.Errorf("fake agent: port %d not served", port)
	}
	a.dialMu.Lock()
	c, err := net.Dial("tcp", a.l.Addr().String())
	if err != nil {
		a.dialMu.Unlock()
		return nil, err
	}
	s, err := a.l.Accept()
	a.dialMu.Unlock()
	if err != nil {
		c.Close()
		return nil, err
	}
	switch port {
	case wire.MuxPort:
		a.dials.Add(1)
		if a.older {
			s = olderMoves{s}
		}
		go a.flows.ServeSession(s)
	case wire.MovePort:
		a.moves.Add(1)
		go a.flows.ServeMove(&countingConn{TCPConn: s.(*net.TCPConn), out: &a.moved, in: &a.movedUp})
	}
	a.mu.Lock()
	a.conns = append(a.conns, c, s)
	a.mu.Unlock()
	return c, nil
}

// countingConn counts what goes through a TCP connection, each way.
type countingConn struct {
	*net.TCPConn
	out, in *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

// ReadFrom and WriteTo hide the TCP connection's own, which would bypass the counts.
func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

func (c *countingConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

func (a *fakeAgent) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
}

// tcpServer runs handle for every connection to a new loopback listener.
func tcpServer(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
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
			go func() { handle(c); c.Close() }()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

func echoServer(t *testing.T) netip.AddrPort {
	return tcpServer(t, func(c net.Conn) { io.Copy(c, c) })
}

func echo(t *testing.T, c net.Conn) {
	t.Helper()
	io.WriteString(c, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo through the tunnel: %q %v", b, err)
	}
}

func TestDialerSpreadsFlowsOverAFewSessions(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	dst := echoServer(t)
	var conns []net.Conn
	for range 10 {
		c, err := d.DialTCP(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c)
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	if got := agent.dials.Load(); got != muxSessions {
		t.Errorf("10 flows opened %d port-forward streams, want %d", got, muxSessions)
	}
}

func TestDialerReplacesDeadSessionsButDoesNotRetryRefusals(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	dst := echoServer(t)
	for range muxSessions {
		c, err := d.DialTCP(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	agent.kill() // the port-forward dropped: every session is dead
	for range 2 * muxSessions {
		c, err := d.DialTCP(context.Background(), dst)
		if err != nil {
			t.Fatalf("a dead session must be replaced by a new one: %v", err)
		}
		echo(t, c)
		c.Close()
	}
	before := agent.dials.Load()
	_, err := d.DialTCP(context.Background(), netip.MustParseAddrPort("127.0.0.1:1"))
	if err == nil || !strings.Contains(err.Error(), "from the cluster") {
		t.Fatalf("a refused destination: %v", err)
	}
	if n := agent.dials.Load() - before; n != 0 {
		t.Errorf("a refusal opened %d new streams, want 0: it must not be retried", n)
	}
}

// byteServer sends n random bytes to every connection, then closes it; it returns what it sends.
func byteServer(t *testing.T, n int) (netip.AddrPort, []byte) {
	data := make([]byte, n)
	rand.Read(data)
	return tcpServer(t, func(c net.Conn) { c.Write(data) }), data
}

func TestDialerMovesLargeDownloadsToAStreamOfTheirOwn(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	for _, tc := range []struct {
		size  int
		moves int32
	}{{wire.MoveAfter / 2, 0}, {32 * wire.MoveAfter, 1}} { // large enough to outlast the move
		dst, want := byteServer(t, tc.size)
		before, movedBefore := agent.moves.Load(), agent.moved.Load()
		c, err := d.DialTCP(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: got %d intact=%v, err %v", tc.size, len(got), bytes.Equal(got, want), err)
		}
		if n := agent.moves.Load() - before; n != tc.moves {
			t.Errorf("%d bytes: %d moves, want %d", tc.size, n, tc.moves)
		}
		if moved := agent.moved.Load() - movedBefore; (moved > 0) != (tc.moves > 0) {
			t.Errorf("%d bytes: %d of them came on the flow's own stream", tc.size, moved)
		}
	}
}

// digestServer answers every connection with the SHA-256 of all it got up to the half-close,
// and sends nothing before.
func digestServer(t *testing.T) netip.AddrPort {
	return tcpServer(t, func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		c.Write(h.Sum(nil))
	})
}

// upload sends size random bytes through d to dst, a digestServer, reading all along as the
// stack's relay does, and checks the digest; it returns how many bytes the agent got on
// move-port streams meanwhile. With pauseAt > 0 it waits, once pauseAt bytes are sent, until
// the flow may move its upload, so that the rest must go on the flow's own stream however
// slow the move.
func upload(t *testing.T, d *Dialer, agent *fakeAgent, dst netip.AddrPort, size, pauseAt int) int64 {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	before := agent.movedUp.Load()
	c, err := d.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type result struct {
		b   []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(c)
		read <- result{b, err}
	}()
	for b := data; len(b) > 0; { // in the pieces a stack hands over
		if pauseAt > 0 && len(data)-len(b) == pauseAt {
			for deadline := time.Now().Add(10 * time.Second); !c.(*flow).upMayMove.Load(); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d bytes sent, and the flow never got the go-ahead to move its upload", pauseAt)
				}
			}
		}
		n := min(len(b), 16<<10)
		if _, err := c.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	r := <-read
	if want := sha256.Sum256(data); r.err != nil || !bytes.Equal(r.b, want[:]) {
		t.Fatalf("%d bytes: digest %x, err %v; want %x", size, r.b, r.err, want)
	}
	return agent.movedUp.Load() - before
}

func TestDialerCarriesALargeUploadAndTheHalfClose(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	dst := digestServer(t)
	// The server sends nothing before the upload ends: the agent must move the flow without
	// waiting for a download, and the rest of a large upload goes on the flow's own stream.
	if up := upload(t, d, agent, dst, wire.MoveAfter/2, 0); up > 0 {
		t.Errorf("%d bytes of a small upload went on a stream of their own; it stays on the mux", up)
	}
	size, pauseAt := 32*wire.MoveAfter+777, 2*wire.MoveAfter
	if up := upload(t, d, agent, dst, size, pauseAt); up < int64(size-pauseAt) {
		t.Errorf("only %d of %d bytes went on the flow's own stream; want all %d sent after the move", up, size, size-pauseAt)
	}
}

// TestDialerKeepsUploadsOnTheMuxForAnOlderAgent: an agent whose Move does not offer
// wire.MoveTakesUploads reads nothing after the go-ahead, so the upload stays on the mux.
func TestDialerKeepsUploadsOnTheMuxForAnOlderAgent(t *testing.T) {
	agent := newFakeAgent(t)
	agent.older = true
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	size := 32*wire.MoveAfter + 777
	if up := upload(t, d, agent, digestServer(t), size, 0); up > 32 { // the request and the go-ahead
		t.Errorf("%d bytes went on the flow's own stream; an older agent reads none of them", up)
	}
	if agent.moves.Load() != 1 {
		t.Errorf("%d moves; want the download's one", agent.moves.Load())
	}
}

// olderMoves passes the agent's mux frames on with the argument of every Move cleared, as an
// agent from before wire.MoveTakesUploads sent them. Each Write holds whole frames (pkg/mux
// writes a frame, or an open frame and another, at a time); types 2 and 6 are pkg/mux's data
// and move frames.
type olderMoves struct{ net.Conn }

func (c olderMoves) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	for i := 0; i+9 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[i+5 : i+9]))
		switch b[i] {
		case 6:
			binary.BigEndian.PutUint32(b[i+5:i+9], 0)
		case 2:
			i += n
		}
		i += 9
	}
	return c.Conn.Write(b)
}

func TestDialerEarlySendsBeforeTheAnswer(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	got := make(chan string, 1)
	dst := tcpServer(t, func(c net.Conn) {
		b := make([]byte, 5)
		io.ReadFull(c, b)
		got <- string(b)
		c.Write([]byte("world"))
	})
	ctx := context.Background()
	c, confirm, err := d.DialTCPEarly(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Written before the answer was read: it reaches the destination all the same.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatalf("the destination got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the early bytes did not reach the destination")
	}
	if err := confirm(ctx); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "world" {
		t.Fatalf("answer %q %v", b, err)
	}

	// A refusal comes out of confirm, and keeps the session.
	for range muxSessions { // every session open
		c, err := d.DialTCP(ctx, echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	before := agent.dials.Load()
	c2, confirm, err := d.DialTCPEarly(ctx, netip.MustParseAddrPort("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	c2.Write([]byte("lost"))
	if err := confirm(ctx); err == nil || !strings.Contains(err.Error(), "from the cluster") {
		t.Fatalf("confirm of a refused destination: %v", err)
	}
	for range muxSessions {
		c, err := d.DialTCP(ctx, echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c)
		c.Close()
	}
	if n := agent.dials.Load() - before; n != 0 {
		t.Errorf("a refusal opened %d new sessions, want 0", n)
	}
}

// sinkAgent's sessions take everything and never answer, until cut.
type sinkAgent struct {
	mu    sync.Mutex
	peers []net.Conn
}

func (a *sinkAgent) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	c, s := net.Pipe()
	go io.Copy(io.Discard, s)
	a.mu.Lock()
	a.peers = append(a.peers, s)
	a.mu.Unlock()
	return c, nil
}

func TestDialerEarlyRetiresASessionThatDiedBeforeTheAnswer(t *testing.T) {
	agent := &sinkAgent{}
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	ctx := context.Background()
	c, confirm, err := d.DialTCPEarly(ctx, netip.MustParseAddrPort("10.96.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Not answered within the context: the session may be slow, not dead, and stays.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := confirm(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("confirm past its deadline: %v", err)
	}
	if d.sessions[0] == nil {
		t.Fatal("a session that was only slow was retired")
	}
	c, confirm, err = d.DialTCPEarly(ctx, netip.MustParseAddrPort("10.96.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := d.sessions[1]
	go func() { time.Sleep(50 * time.Millisecond); agent.mu.Lock(); agent.peers[1].Close(); agent.mu.Unlock() }()
	if err := confirm(ctx); err == nil {
		t.Fatal("confirm on a session that died succeeded")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t2 := range d.sessions {
		if t2 == s {
			t.Fatal("the dead session was not retired")
		}
	}
}

func TestDialerOpenOpensEverySessionAhead(t *testing.T) {
	agent := newFakeAgent(t)
	d := &Dialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	if err := d.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := agent.dials.Load(); n != muxSessions {
		t.Fatalf("Open made %d sessions, want %d", n, muxSessions)
	}
	dst := echoServer(t)
	for range 2 * muxSessions {
		c, err := d.DialTCP(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c)
		c.Close()
	}
	if n := agent.dials.Load(); n != muxSessions {
		t.Errorf("flows after Open opened %d more sessions, want none", n-muxSessions)
	}
	if err := d.Open(context.Background()); err != nil { // open already: kept
		t.Fatal(err)
	}
	if n := agent.dials.Load(); n != muxSessions {
		t.Errorf("a second Open dialled %d, want none", n-muxSessions)
	}
	agent.kill() // dead sessions are opened anew
	waitDead := time.Now().Add(5 * time.Second)
	for d.sessions[0].Err() == nil || d.sessions[1].Err() == nil {
		if time.Now().After(waitDead) {
			t.Fatal("the sessions did not end")
		}
		time.Sleep(time.Millisecond)
	}
	if err := d.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := agent.dials.Load(); n != 2*muxSessions {
		t.Errorf("Open after the sessions died dialled %d, want %d", n-muxSessions, muxSessions)
	}
	c, err := d.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c)
	c.Close()
}

// gatedAgent's dials wait for open, after telling entered.
type gatedAgent struct {
	*fakeAgent
	entered chan struct{}
	open    chan struct{}
}

func (g *gatedAgent) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	g.entered <- struct{}{}
	<-g.open
	return g.fakeAgent.Dial(ctx, port)
}

// A session replaced while Open is on its way (connect recovering a deleted shadow) keeps the
// new agent's sessions: Open's late ones, to the old agent, are closed.
func TestDialerOpenAcrossAReplacedSession(t *testing.T) {
	old := &gatedAgent{fakeAgent: newFakeAgent(t), entered: make(chan struct{}, muxSessions), open: make(chan struct{})}
	var cur atomic.Pointer[PortDialer]
	set := func(a PortDialer) { cur.Store(&a) }
	set(old)
	d := &Dialer{Agent: func() PortDialer { return *cur.Load() }}
	defer d.Close()
	opened := make(chan error, 1)
	go func() { opened <- d.Open(context.Background()) }()
	for range muxSessions {
		<-old.entered
	}
	replacement := newFakeAgent(t)
	set(replacement)
	c, err := d.DialTCP(context.Background(), echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	close(old.open)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	echo(t, c)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.agent != PortDialer(replacement) {
		t.Fatal("Open made the replaced agent current again")
	}
	for i, s := range d.sessions {
		if s != nil && s.agent != PortDialer(replacement) {
			t.Errorf("slot %d holds a session to the replaced agent", i)
		}
	}
}
