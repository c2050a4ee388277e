package connect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// PortDialer opens connections to the agent's ports (a session's port-forward).
type PortDialer interface {
	Dial(ctx context.Context, port uint16) (net.Conn, error)
}

// TunnelDialer carries the netstack's flows to the cluster through the agent: TCP with SOCKS5
// CONNECT, UDP with the framed relay. Each flow is one port-forward stream. A few SOCKS5
// streams are opened ahead of need, so that a new connection does not wait for a new stream
// (a round trip through the API server and the kubelet) before its own round trip to the agent.
type TunnelDialer struct {
	Agent func() PortDialer // the current session, which may be replaced on recovery

	mu      sync.Mutex
	warm    []warmConn
	filling bool
}

// warmStreams is how many idle SOCKS5 streams the dialer keeps open.
const warmStreams = 4

type warmConn struct {
	agent PortDialer
	conn  net.Conn
}

// refusedError is the agent's answer that the destination refused or is unreachable.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// socksStream returns a SOCKS5 stream to the current agent, warm if one is ready.
func (d *TunnelDialer) socksStream(ctx context.Context, allowWarm bool) (c net.Conn, warm bool, err error) {
	a := d.Agent()
	d.mu.Lock()
	for allowWarm && len(d.warm) > 0 {
		w := d.warm[len(d.warm)-1]
		d.warm = d.warm[:len(d.warm)-1]
		if w.agent == a {
			c, warm = w.conn, true
			break
		}
		w.conn.Close() // a replaced session's
	}
	d.mu.Unlock()
	d.refill(a)
	if warm {
		return c, true, nil
	}
	c, err = a.Dial(ctx, wire.SOCKSPort)
	return c, false, err
}

// refill opens streams in the background until warmStreams are ready.
func (d *TunnelDialer) refill(a PortDialer) {
	d.mu.Lock()
	if d.filling || len(d.warm) >= warmStreams {
		d.mu.Unlock()
		return
	}
	d.filling = true
	d.mu.Unlock()
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := a.Dial(ctx, wire.SOCKSPort)
			cancel()
			d.mu.Lock()
			if err != nil || d.Agent() != a {
				d.filling = false
				d.mu.Unlock()
				if c != nil {
					c.Close()
				}
				return
			}
			d.warm = append(d.warm, warmConn{a, c})
			if len(d.warm) >= warmStreams {
				d.filling = false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
		}
	}()
}

// Close closes the idle streams.
func (d *TunnelDialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.warm {
		w.conn.Close()
	}
	d.warm = nil
}

// socks dials hostport through the agent. A warm stream that turns out dead (its port-forward
// dropped) is replaced by a new one, once.
func (d *TunnelDialer) socks(ctx context.Context, hostport string) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, warm, err := d.socksStream(ctx, attempt == 0)
		if err != nil {
			return nil, err
		}
		err = socksConnect(ctx, c, hostport)
		if err == nil {
			return c, nil
		}
		c.Close()
		var refused *refusedError
		if !warm || attempt > 0 || errors.As(err, &refused) || ctx.Err() != nil {
			return nil, err
		}
		d.Close() // the others were opened the same way: likely dead too
	}
}

var socksErrors = map[byte]string{
	1: "general failure", 2: "not allowed", 3: "network unreachable", 4: "host unreachable",
	5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported",
}

// DialTCP connects to dst through the agent's SOCKS5 proxy. The greeting and the request are
// sent together, saving a round trip; the agent's reply carries its dial result.
func (d *TunnelDialer) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return d.socks(ctx, dst.String())
}

// DialHost connects to host:port (a name the cluster resolves) through the agent.
func (d *TunnelDialer) DialHost(ctx context.Context, hostport string) (net.Conn, error) {
	return d.socks(ctx, hostport)
}

func socksConnect(ctx context.Context, c net.Conn, hostport string) error {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	var port uint16
	if _, err := fmt.Sscan(portStr, &port); err != nil {
		return fmt.Errorf("bad port in %q", hostport)
	}
	req := []byte{5, 1, 0, 5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Unmap().Is4() {
			b := a.Unmap().As4()
			req = append(append(req, 1), b[:]...)
		} else {
			b := a.As16()
			req = append(append(req, 4), b[:]...)
		}
	} else {
		if len(host) > 255 {
			return fmt.Errorf("host name too long: %q", host)
		}
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	done := make(chan error, 1)
	go func() {
		if _, err := c.Write(req); err != nil {
			done <- err
			return
		}
		var resp [4]byte
		if _, err := io.ReadFull(c, resp[:2]); err != nil {
			done <- fmt.Errorf("socks greeting: %w", err)
			return
		}
		if resp[0] != 5 || resp[1] != 0 {
			done <- fmt.Errorf("socks: the agent refused the method (%d %d)", resp[0], resp[1])
			return
		}
		if _, err := io.ReadFull(c, resp[:4]); err != nil {
			done <- fmt.Errorf("socks reply: %w", err)
			return
		}
		if resp[1] != 0 {
			msg := socksErrors[resp[1]]
			if msg == "" {
				msg = fmt.Sprintf("code %d", resp[1])
			}
			done <- &refusedError{fmt.Sprintf("connect %s from the cluster: %s", hostport, msg)}
			return
		}
		var skip int
		switch resp[3] {
		case 1:
			skip = 4 + 2
		case 4:
			skip = 16 + 2
		case 3:
			var l [1]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				done <- err
				return
			}
			skip = int(l[0]) + 2
		}
		_, err := io.ReadFull(c, make([]byte, skip))
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

// DialUDP opens a relay stream for datagrams to dst.
func (d *TunnelDialer) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := d.Agent().Dial(ctx, wire.UDPRelayPort)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(wire.RelayMagic[:]); err != nil {
		c.Close()
		return nil, err
	}
	return &relayConn{Conn: c, dst: dst}, nil
}

// relayConn gives a relay stream datagram semantics.
type relayConn struct {
	net.Conn
	dst  netip.AddrPort
	wmu  sync.Mutex
	wbuf []byte
	rbuf []byte
}

func (r *relayConn) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	b, err := wire.AppendFrame(r.wbuf[:0], wire.Frame{Type: wire.FrameDatagram, Addr: r.dst, Payload: p})
	if err != nil {
		return 0, err
	}
	r.wbuf = b
	if _, err := r.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *relayConn) Read(p []byte) (int, error) {
	f, err := wire.ReadFrame(r.Conn, r.rbuf)
	if err != nil {
		return 0, err
	}
	if f.Type == wire.FrameError {
		return 0, errors.New("udp relay: " + string(f.Payload))
	}
	return copy(p, f.Payload), nil
}
