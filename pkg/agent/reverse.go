package agent

import (
	"net"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// reversePool holds the client's idle reverse streams (see wire/reverse.go). They do not
// count as client activity: only the SSH connection, which is kept alive, tells whether the
// client is there.
type reversePool struct {
	mu   sync.Mutex
	gen  uint64
	idle []net.Conn
}

// writeTimeout bounds the write of a go.
const writeTimeout = 2 * time.Second

func (p *reversePool) serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go p.welcome(c)
	}
}

// welcome reads a new stream's hello and keeps the stream.
func (p *reversePool) welcome(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	gen, err := wire.ReadReverseHello(c)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	p.add(c, gen)
}

// add keeps c; a newer generation (a reconnected client) makes the older streams useless.
func (p *reversePool) add(c net.Conn, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case gen < p.gen:
		c.Close()
		return
	case gen > p.gen:
		for _, old := range p.idle {
			old.Close()
		}
		p.idle, p.gen = nil, gen
	}
	p.idle = append(p.idle, c)
}

func (p *reversePool) pop() net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	c := p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	return c
}

func (p *reversePool) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.Close()
	}
	p.idle = nil
}

// take returns an idle stream told to take a connection for port, or nil. The connection's
// data follows the go at once: waiting for an answer would cost a round trip through the
// tunnel on every connection, and a stream of the current generation is dead only when the
// whole tunnel is, which the SSH keepalive notices.
func (p *reversePool) take(port int) net.Conn {
	c := p.pop()
	if c == nil {
		return nil
	}
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := wire.WriteReverseGo(c, port)
	c.SetWriteDeadline(time.Time{})
	if err == nil {
		return c
	}
	klog.Background().V(1).Info("reverse stream gone; dropping the idle ones", "err", err)
	c.Close()
	p.flush() // opened with it, so as dead as it
	return nil
}
