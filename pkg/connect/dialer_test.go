package connect

import (
	"context"
	"io"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// fakeAgent serves SOCKS5 on in-memory pipes, as the agent does at the end of a port-forward
// stream, and counts the streams opened. kill closes every stream opened so far.
type fakeAgent struct {
	srv   *socks5.Server
	dials atomic.Int32
	mu    sync.Mutex
	conns []net.Conn
}

func newFakeAgent(t *testing.T) *fakeAgent {
	srv, err := socks5.New(&socks5.Config{Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeAgent{srv: srv}
}

func (a *fakeAgent) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	a.dials.Add(1)
	c, s := net.Pipe()
	a.mu.Lock()
	a.conns = append(a.conns, c, s)
	a.mu.Unlock()
	go a.srv.ServeConn(s)
	return c, nil
}

func (a *fakeAgent) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
}

func echoServer(t *testing.T) netip.AddrPort {
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

func waitWarm(t *testing.T, d *TunnelDialer, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		got := len(d.warm)
		d.mu.Unlock()
		if got == n {
			return
		}
	}
	t.Fatalf("want %d warm streams", n)
}

func TestDialerUsesWarmStreamsAndRefillsThem(t *testing.T) {
	agent := newFakeAgent(t)
	d := &TunnelDialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	dst := echoServer(t)
	c, err := d.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitWarm(t, d, warmStreams)
	before := agent.dials.Load()
	c, err = d.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo through a warm stream: %q %v", b, err)
	}
	c.Close()
	waitWarm(t, d, warmStreams)
	if got := agent.dials.Load() - before; got != 1 {
		t.Errorf("a dial with warm streams ready opened %d streams, want 1 (the refill)", got)
	}
}

func TestDialerReplacesDeadWarmStreamsButNotRefusals(t *testing.T) {
	agent := newFakeAgent(t)
	d := &TunnelDialer{Agent: func() PortDialer { return agent }}
	defer d.Close()
	dst := echoServer(t)
	if c, err := d.DialTCP(context.Background(), dst); err == nil {
		c.Close()
	}
	waitWarm(t, d, warmStreams)
	agent.kill() // the port-forward dropped: every warm stream is dead
	c, err := d.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatalf("a dead warm stream must be replaced by a new one: %v", err)
	}
	c.Close()
	closed := netip.MustParseAddrPort("127.0.0.1:1")
	waitWarm(t, d, warmStreams) // the refill after the replacement has settled: count from here
	before := agent.dials.Load()
	_, err = d.DialTCP(context.Background(), closed)
	if err == nil || !strings.Contains(err.Error(), "from the cluster") {
		t.Fatalf("a refused destination: %v", err)
	}
	waitWarm(t, d, warmStreams)
	if n := agent.dials.Load() - before; n != 1 { // the refill of the stream it used, no retry
		t.Errorf("a refusal was retried: %d streams opened, want 1 (the refill)", n)
	}
}
