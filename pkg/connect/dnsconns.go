package connect

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// dnsReady is how many DNS connections to the agent are kept open and idle: two, because a
// resolver asks for A and AAAA at once.
const dnsReady = 2

// dnsIdleFor is how long an idle connection is trusted: the agent closes one after two minutes.
const dnsIdleFor = 90 * time.Second

// dnsConns keeps connections to the agent's DNS forwarder open and ready (DNS over TCP takes
// one query after another on a connection), so that a lookup through the tunnel waits for its
// own round trip and not for a stream's opening first. Connections of a session that was
// replaced are not reused.
type dnsConns struct {
	// dial opens a connection to the agent's DNS port and says whose it is; owner is the
	// current owner (the session).
	dial  func(ctx context.Context) (net.Conn, any, error)
	owner func() any

	mu      sync.Mutex
	idle    []*dnsConn
	dialing int // being opened for the pool
	inUse   int // taken by a lookup
	closed  bool
	filled  []chan struct{} // warm's, closed when no dial for the pool is left
}

type dnsConn struct {
	conn  net.Conn
	owner any
	used  time.Time
}

// exchange asks m on a ready connection, or on a new one. A reused connection that fails (the
// agent or the tunnel closed it meanwhile, and the other idle ones with it) is retried once on
// a new one.
func (p *dnsConns) exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	for attempt := 0; ; attempt++ {
		dc, reused, err := p.get(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		r, err := dc.exchange(ctx, m)
		if err == nil {
			p.put(dc)
			return r, nil
		}
		p.discard(dc, reused)
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// get takes an idle connection (unless fresh), or dials one; either way the pool is refilled
// behind it.
func (p *dnsConns) get(ctx context.Context, fresh bool) (dc *dnsConn, reused bool, err error) {
	p.mu.Lock()
	owner := p.owner()
	for len(p.idle) > 0 && dc == nil && !fresh {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if c.owner != owner || time.Since(c.used) > dnsIdleFor {
			c.conn.Close()
			continue
		}
		dc = c
	}
	p.inUse++
	p.refillLocked()
	p.mu.Unlock()
	if dc != nil {
		return dc, true, nil
	}
	conn, o, err := p.dial(ctx)
	if err != nil {
		p.mu.Lock()
		p.inUse--
		p.mu.Unlock()
		return nil, false, err
	}
	return &dnsConn{conn: conn, owner: o}, false, nil
}

// discard closes dc, which failed; if it had been idle, so were the others, which go too.
func (p *dnsConns) discard(dc *dnsConn, reused bool) {
	dc.conn.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse--
	if reused {
		for _, c := range p.idle {
			c.conn.Close()
		}
		p.idle = nil
	}
}

// put keeps dc for the next lookup, unless enough are idle or its session was replaced.
func (p *dnsConns) put(dc *dnsConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse--
	if p.closed || len(p.idle) >= dnsReady || dc.owner != p.owner() {
		dc.conn.Close()
		return
	}
	dc.used = time.Now()
	p.idle = append(p.idle, dc)
}

// refill opens connections until dnsReady are idle, in use or being opened. It runs only when
// a lookup takes one (and once when connect starts), so a failing agent costs a bounded number
// of dials, and lookups one or two at a time open none.
func (p *dnsConns) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked()
}

func (p *dnsConns) refillLocked() {
	for ; !p.closed && len(p.idle)+p.dialing+p.inUse < dnsReady; p.dialing++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, o, err := p.dial(ctx)
			p.mu.Lock()
			defer p.mu.Unlock()
			p.dialing--
			if p.dialing == 0 {
				defer func() {
					for _, ch := range p.filled {
						close(ch)
					}
					p.filled = nil
				}()
			}
			if err != nil {
				return
			}
			if p.closed || len(p.idle) >= dnsReady || o != p.owner() {
				conn.Close()
				return
			}
			p.idle = append(p.idle, &dnsConn{conn: conn, owner: o, used: time.Now()})
		}()
	}
}

// warm fills the pool and waits until its dials are done (or failed), or ctx ends.
func (p *dnsConns) warm(ctx context.Context) {
	p.mu.Lock()
	p.refillLocked()
	if p.dialing == 0 {
		p.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	p.filled = append(p.filled, ch)
	p.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// close closes the idle connections; those in use close after their lookup.
func (p *dnsConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.idle {
		c.conn.Close()
	}
	p.idle = nil
}

// exchange writes m and reads its answer, until ctx ends (a port-forward stream has no
// deadlines: the connection is closed instead).
func (dc *dnsConn) exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	type res struct {
		m   *mdns.Msg
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c := &mdns.Conn{Conn: dc.conn}
		if err := c.WriteMsg(m); err != nil {
			ch <- res{nil, err}
			return
		}
		r, err := c.ReadMsg()
		if err == nil && r.Id != m.Id {
			err = fmt.Errorf("dns: the agent answered query %d with %d", m.Id, r.Id)
		}
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		dc.conn.Close()
		return nil, ctx.Err()
	}
}
