package connect

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// agentDNS is a DNS server over TCP, as the agent's forwarder is, that counts its connections.
type agentDNS struct {
	addr  string
	conns atomic.Int32
	ln    net.Listener
}

func startAgentDNS(t *testing.T) *agentDNS {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &agentDNS{addr: l.Addr().String(), ln: l}
	srv := &mdns.Server{Listener: countingListener{l, &a.conns}, Net: "tcp", Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 5 IN A 10.96.0.7")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return a
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// readyPool is a pool of connections to a, its dnsReady connections open.
func readyPool(t *testing.T, a *agentDNS, owner *atomic.Int32, dials *atomic.Int32) *dnsConns {
	p := &dnsConns{
		dial: func(ctx context.Context) (net.Conn, any, error) {
			dials.Add(1)
			o := owner.Load()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a.addr)
			return c, o, err
		},
		owner: func() any { return owner.Load() },
	}
	p.refill()
	waitIdle(t, p, dnsReady)
	return p
}

func query(t *testing.T, p *dnsConns, name string) {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	r, err := p.exchange(context.Background(), m)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].Header().Name != name {
		t.Fatalf("%s: %v %v", name, r, err)
	}
}

func waitIdle(t *testing.T, p *dnsConns, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p.mu.Lock()
		got := len(p.idle)
		p.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, want %d", got, n)
		}
	}
}

func TestDNSConnsReuseReadyConnections(t *testing.T) {
	a := startAgentDNS(t)
	var owner, dials atomic.Int32
	p := readyPool(t, a, &owner, &dials)
	for i := range 20 {
		query(t, p, "web"+string(rune('a'+i))+".kt.svc.cluster.local.")
	}
	// A and AAAA at once: both on ready connections.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); query(t, p, "web.kt.svc.cluster.local.") }()
	}
	wg.Wait()
	if d := dials.Load(); d != dnsReady {
		t.Fatalf("%d dials for 22 lookups, want the %d ready ones only", d, dnsReady)
	}
	p.close()
	if n := len(p.idle); n != 0 {
		t.Fatalf("%d idle after close", n)
	}
}

func TestDNSConnsRetryAClosedConnectionAndDropAReplacedSession(t *testing.T) {
	a := startAgentDNS(t)
	var owner, dials atomic.Int32
	p := readyPool(t, a, &owner, &dials)
	p.mu.Lock()
	for _, c := range p.idle { // the agent (or the tunnel) closed them meanwhile
		c.conn.Close()
	}
	p.mu.Unlock()
	query(t, p, "a.kt.svc.cluster.local.")

	waitIdle(t, p, dnsReady)
	owner.Store(1) // a new session: the old one's connections are not used
	before := a.conns.Load()
	query(t, p, "b.kt.svc.cluster.local.")
	if a.conns.Load() == before {
		t.Fatal("the lookup used a connection of the replaced session")
	}
	p.mu.Lock()
	for _, c := range p.idle {
		if c.owner != any(int32(1)) {
			t.Errorf("an idle connection of session %v", c.owner)
		}
	}
	p.mu.Unlock()
}

func TestDNSConnsFailingDialIsBounded(t *testing.T) {
	var dials atomic.Int32
	p := &dnsConns{
		dial: func(context.Context) (net.Conn, any, error) {
			dials.Add(1)
			return nil, nil, net.ErrClosed
		},
		owner: func() any { return nil },
	}
	p.refill()
	m := new(mdns.Msg)
	m.SetQuestion("a.kt.svc.cluster.local.", mdns.TypeA)
	if _, err := p.exchange(context.Background(), m); err == nil {
		t.Fatal("no error from a dial that fails")
	}
	time.Sleep(50 * time.Millisecond)
	if d := dials.Load(); d > 2*dnsReady+1 {
		t.Fatalf("%d dials for one lookup with a failing agent", d)
	}
}

// warm returns once the pool's connections are open, so "Connected" can wait for them: the
// first lookups after it then take a ready connection each, A and AAAA at once.
func TestDNSConnsWarmWaitsForTheOpenConnections(t *testing.T) {
	a := startAgentDNS(t)
	var owner, dials atomic.Int32
	slow := make(chan struct{})
	p := &dnsConns{
		dial: func(ctx context.Context) (net.Conn, any, error) {
			dials.Add(1)
			<-slow // a stream's opening takes a round trip
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a.addr)
			return c, owner.Load(), err
		},
		owner: func() any { return owner.Load() },
	}
	warmed := make(chan struct{})
	go func() { p.warm(context.Background()); close(warmed) }()
	select {
	case <-warmed:
		t.Fatal("warm returned before its dials were done")
	case <-time.After(50 * time.Millisecond):
	}
	close(slow)
	select {
	case <-warmed:
	case <-time.After(5 * time.Second):
		t.Fatal("warm did not return")
	}
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != dnsReady {
		t.Fatalf("%d idle connections after warm, want %d", idle, dnsReady)
	}
	var wg sync.WaitGroup
	for _, n := range []string{"a.kt.svc.cluster.local.", "b.kt.svc.cluster.local."} {
		wg.Add(1)
		go func() { defer wg.Done(); query(t, p, n) }()
	}
	wg.Wait()
	if n := dials.Load(); n != dnsReady {
		t.Errorf("two lookups at once after warm: %d dials, want the %d warm made", n, dnsReady)
	}
	// A warm pool: warm returns at once.
	p.warm(context.Background())
}
