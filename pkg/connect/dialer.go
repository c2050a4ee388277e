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

	"github.com/kubectl-kt/kt/pkg/wire"
)

// PortDialer opens connections to the agent's ports (a session's port-forward).
type PortDialer interface {
	Dial(ctx context.Context, port uint16) (net.Conn, error)
}

// TunnelDialer carries the netstack's flows to the cluster through the agent: TCP with SOCKS5
// CONNECT, UDP with the framed relay. Each flow is one port-forward stream.
type TunnelDialer struct {
	Agent func() PortDialer // the current session, which may be replaced on recovery
}

var socksErrors = map[byte]string{
	1: "general failure", 2: "not allowed", 3: "network unreachable", 4: "host unreachable",
	5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported",
}

// DialTCP connects to dst through the agent's SOCKS5 proxy. The greeting and the request are
// sent together, saving a round trip; the agent's reply carries its dial result.
func (d *TunnelDialer) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := d.Agent().Dial(ctx, wire.SOCKSPort)
	if err != nil {
		return nil, err
	}
	if err := socksConnect(ctx, c, dst.String()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// DialHost connects to host:port (a name the cluster resolves) through the agent.
func (d *TunnelDialer) DialHost(ctx context.Context, hostport string) (net.Conn, error) {
	c, err := d.Agent().Dial(ctx, wire.SOCKSPort)
	if err != nil {
		return nil, err
	}
	if err := socksConnect(ctx, c, hostport); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
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
			done <- fmt.Errorf("connect %s from the cluster: %s", hostport, msg)
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
