package agent

import (
	"fmt"
	"net"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// authListener hands out only the connections that open with the agent's stream secret
// (wire.ReadAuth). The check runs beside the accept loop, bounded in time and in number, so a
// silent or slow peer holds up no one else.
type authListener struct {
	net.Listener
	secret []byte
	digest []byte
	conns  chan net.Conn
	done   chan struct{}
	err    error
}

const (
	authTimeout = 10 * time.Second
	maxPending  = 64 // streams still to authenticate; more are closed at once
)

func newAuthListener(l net.Listener, secret, digest []byte) *authListener {
	a := &authListener{Listener: l, secret: secret, digest: digest, conns: make(chan net.Conn), done: make(chan struct{})}
	go a.loop()
	return a
}

func (a *authListener) loop() {
	pending := make(chan struct{}, maxPending)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := a.Listener.Accept()
		if err != nil {
			a.err = err
			close(a.done)
			return
		}
		select {
		case pending <- struct{}{}:
		default:
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-pending }()
			c.SetReadDeadline(time.Now().Add(authTimeout))
			err := wire.ReadAuth(c, a.secret, a.digest)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				klog.Background().V(1).Info("refused a stream without the session's secret", "port", portOf(a.Listener.Addr()))
				c.Close()
				return
			}
			select {
			case a.conns <- c:
			case <-a.done:
				c.Close()
			}
		}()
	}
}

func (a *authListener) Accept() (net.Conn, error) {
	select {
	case c := <-a.conns:
		return c, nil
	case <-a.done:
		return nil, fmt.Errorf("accept: %w", a.err)
	}
}

func portOf(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}
