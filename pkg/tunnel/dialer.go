// Package tunnel carries connections to the cluster through a shadow's agent: TCP flows as
// SOCKS5 CONNECTs on a few shared mux sessions (large ones moved to streams of their own), UDP
// flows on the framed relay. connect's netstack and forward dial with it.
package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubectl-kt/kt/pkg/mux"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// PortDialer opens connections to the agent's ports (a session's port-forward).
type PortDialer interface {
	Dial(ctx context.Context, port uint16) (net.Conn, error)
}

// Dialer carries the netstack's flows to the cluster through the agent: TCP with SOCKS5
// CONNECT, UDP with the framed relay. TCP flows share a few mux sessions, each one port-forward
// stream: a new connection costs one round trip to the agent, where a stream of its own would
// first cost a round trip through the API server, the kubelet and the container runtime, and
// work there that slows the flows already running. A flow that turns into a large download
// or upload moves to a stream of its own, which the agent splices (pkg/wire/flows.go).
type Dialer struct {
	Agent func() PortDialer // the current session, which may be replaced on recovery

	mu       sync.Mutex
	agent    PortDialer // whose sessions these are
	sessions [muxSessions]*muxSession
	next     int
}

// muxSessions is how many mux sessions the dialer spreads flows over: parallel flows then
// travel on more than one stream through the kubelet and the runtime.
const muxSessions = 2

type muxSession struct {
	*mux.Session
	agent PortDialer
	token [wire.TokenLen]byte
}

// refusedError is the agent's answer that the destination refused or is unreachable.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// session returns a running mux session to the current agent, in turn, opening one where the
// slot is empty or its session ended. A stale session (one that just failed a dial) is replaced
// in its slot by a new one, which is returned.
func (d *Dialer) session(ctx context.Context, stale *muxSession) (*muxSession, error) {
	a := d.Agent()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.useLocked(a)
	i := -1
	for j, s := range d.sessions {
		if stale != nil && s == stale {
			i = j
			s.Close()
		}
	}
	if i < 0 {
		i = d.next
		d.next = (d.next + 1) % muxSessions
		if s := d.sessions[i]; s != nil && s.Err() == nil {
			return s, nil
		}
	}
	d.sessions[i] = nil
	s, err := openSession(ctx, a)
	if err != nil {
		return nil, err
	}
	d.sessions[i] = s
	return s, nil
}

// openSession opens a mux session to a's mux port.
func openSession(ctx context.Context, a PortDialer) (*muxSession, error) {
	s := &muxSession{agent: a}
	if _, err := rand.Read(s.token[:]); err != nil {
		return nil, err
	}
	c, err := a.Dial(ctx, wire.MuxPort)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(s.token[:]); err != nil {
		c.Close()
		return nil, err
	}
	s.Session = mux.Client(c)
	return s, nil
}

// Open opens every mux session ahead of the first flow, at once, so that the first
// connections wait for their own dial and not for a port-forward stream's opening first.
func (d *Dialer) Open(ctx context.Context) error {
	a := d.Agent()
	var empty []int
	d.mu.Lock()
	d.useLocked(a)
	for i, s := range d.sessions {
		if s == nil || s.Err() != nil {
			empty = append(empty, i)
		}
	}
	d.mu.Unlock()
	errs := make(chan error, len(empty))
	for _, i := range empty {
		go func() {
			s, err := openSession(ctx, a)
			if err != nil {
				errs <- err
				return
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			switch old := d.sessions[i]; {
			case d.agent != a: // the session was replaced meanwhile: its flows are the new agent's
				s.Close()
			case old != nil && old.Err() == nil: // a flow opened this one meanwhile
				s.Close()
			default:
				d.sessions[i] = s
			}
			errs <- nil
		}()
	}
	var err error
	for range empty {
		err = errors.Join(err, <-errs)
	}
	return err
}

// useLocked makes a the agent whose sessions these are, closing a replaced agent's.
func (d *Dialer) useLocked(a PortDialer) {
	if d.agent != a {
		d.closeLocked()
		d.agent = a
	}
}

func (d *Dialer) closeLocked() {
	for i, s := range d.sessions {
		if s != nil {
			s.Close()
			d.sessions[i] = nil
		}
	}
}

// Close ends the mux sessions and the flows on them.
func (d *Dialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
}

// socks dials hostport through the agent. A session that turns out dead (its port-forward
// dropped) is replaced by a new one, once.
func (d *Dialer) socks(ctx context.Context, hostport string) (net.Conn, error) {
	var stale *muxSession
	for attempt := 0; ; attempt++ {
		s, err := d.session(ctx, stale)
		if err != nil {
			return nil, err
		}
		st, err := s.OpenDeferred()
		if err == nil {
			err = socksConnect(ctx, st, hostport)
			if err == nil {
				return newFlow(st, s), nil
			}
			st.Close()
		}
		var refused *refusedError
		if attempt > 0 || errors.As(err, &refused) || ctx.Err() != nil {
			return nil, err
		}
		stale = s
	}
}

// flow is a TCP flow through the agent: a mux stream, and once wire.MoveAfter bytes went
// either way, a port-forward stream of its own for the rest, each way (see wire/flows.go).
type flow struct {
	*mux.Stream
	session *muxSession

	asked atomic.Bool   // the move was asked for
	ready chan struct{} // closed when own is set or the move failed

	// Read's own
	received int64
	moved    bool // reads come from own

	// Write's own
	sent    int64
	upMoved bool // writes go to own

	upMayMove atomic.Bool // Read sent the go-ahead on own, to an agent that takes uploads there; own is set

	mu     sync.Mutex
	own    net.Conn // the flow's own stream
	closed bool
}

func newFlow(st *mux.Stream, s *muxSession) *flow {
	return &flow{Stream: st, session: s, ready: make(chan struct{})}
}

// ask asks for the move once, from whichever direction gets there first.
func (f *flow) ask() {
	if f.asked.CompareAndSwap(false, true) {
		go f.move()
	}
}

func (f *flow) ownStream() net.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.own
}

func (f *flow) Read(p []byte) (int, error) {
	if f.moved {
		return f.own.Read(p)
	}
	n, err := f.Stream.Read(p)
	f.received += int64(n)
	if f.received >= wire.MoveAfter {
		f.ask()
	}
	if !errors.Is(err, mux.ErrMoved) {
		return n, err
	}
	if !f.asked.Load() {
		return 0, errors.New("the agent moved a flow nobody asked it to move")
	}
	<-f.ready
	own := f.ownStream()
	if own == nil {
		return 0, errors.New("the agent moved the flow to a stream that failed")
	}
	f.moved = true
	if _, err := own.Write([]byte{1}); err != nil { // go on: see wire/flows.go
		return 0, err
	}
	if f.Stream.MoveArg()&wire.MoveTakesUploads != 0 {
		f.upMayMove.Store(true)
	}
	return own.Read(p)
}

// Write sends on the mux stream until the download has moved (the go-ahead is the first
// thing on the flow's own stream) to an agent that takes uploads there too, then ends the
// upload on the mux stream with a Move frame and sends the rest on the flow's own stream.
func (f *flow) Write(p []byte) (int, error) {
	if !f.upMoved && f.upMayMove.Load() {
		if err := f.Stream.Move(0); err != nil {
			return 0, err
		}
		f.upMoved = true
	}
	if f.upMoved {
		return f.own.Write(p) // set before upMayMove, and for good
	}
	n, err := f.Stream.Write(p)
	f.sent += int64(n)
	if f.sent >= wire.MoveAfter {
		f.ask()
	}
	return n, err
}

var uploadBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// ReadFrom sends what r yields through Write: the mux stream's own ReadFrom would not move.
func (f *flow) ReadFrom(r io.Reader) (int64, error) {
	bp := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{r}, *bp)
}

// CloseWrite ends the upload where it goes.
func (f *flow) CloseWrite() error {
	if !f.upMoved {
		return f.Stream.CloseWrite()
	}
	if cw, ok := f.own.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// move opens the flow's own stream and asks the agent to send the rest there.
func (f *flow) move() {
	defer close(f.ready)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := f.session.agent.Dial(ctx, wire.MovePort)
	if err != nil {
		return // the flow stays on the mux
	}
	req := wire.MoveRequest{Token: f.session.token, Stream: f.Stream.ID()}
	if _, err := c.Write(req.Append(nil)); err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return
	}
	f.own = c
}

func (f *flow) Close() error {
	f.mu.Lock()
	f.closed = true
	own := f.own
	f.mu.Unlock()
	if own != nil {
		own.Close()
	}
	return f.Stream.Close()
}

var socksErrors = map[byte]string{
	1: "general failure", 2: "not allowed", 3: "network unreachable", 4: "host unreachable",
	5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported",
}

// DialTCP connects to dst through the agent's SOCKS5 proxy. The greeting and the request are
// sent together, saving a round trip; the agent's reply carries its dial result.
func (d *Dialer) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return d.socks(ctx, dst.String())
}

// DialHost connects to host:port (a name the cluster resolves) through the agent.
func (d *Dialer) DialHost(ctx context.Context, hostport string) (net.Conn, error) {
	return d.socks(ctx, hostport)
}

// DialTCPEarly sends the request for a connection to dst through the agent and returns at
// once, without waiting for the agent's answer: what is written follows the request at once.
// confirm waits for the answer (the netstack calls it before the first Read); after a failed
// confirm the conn is closed. A session that fails it is retired, but the connection is not
// tried again: what the client sent may have reached the destination.
func (d *Dialer) DialTCPEarly(ctx context.Context, dst netip.AddrPort) (net.Conn, func(context.Context) error, error) {
	hostport := dst.String()
	req, err := socksRequest(hostport)
	if err != nil {
		return nil, nil, err
	}
	s, err := d.session(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.OpenDeferred()
	if err == nil {
		_, err = st.Write(req)
	}
	if err != nil {
		if st != nil {
			st.Close()
		}
		d.retire(s)
		return nil, nil, err
	}
	confirm := func(ctx context.Context) error {
		err := awaitSocks(ctx, st, func() error { return readSocksReply(st, hostport) })
		if err != nil {
			st.Close()
			var refused *refusedError
			if !errors.As(err, &refused) && ctx.Err() == nil {
				d.retire(s)
			}
		}
		return err
	}
	return newFlow(st, s), confirm, nil
}

// retire takes a session that failed a flow out of its slot, so that the next flow opens a
// new one.
func (d *Dialer) retire(s *muxSession) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, t := range d.sessions {
		if t == s {
			s.Close()
			d.sessions[i] = nil
		}
	}
}

func socksConnect(ctx context.Context, c net.Conn, hostport string) error {
	req, err := socksRequest(hostport)
	if err != nil {
		return err
	}
	return awaitSocks(ctx, c, func() error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		return readSocksReply(c, hostport)
	})
}

// awaitSocks runs exchange, closing c if ctx ends first.
func awaitSocks(ctx context.Context, c net.Conn, exchange func() error) error {
	done := make(chan error, 1)
	go func() { done <- exchange() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

// socksRequest is the SOCKS5 greeting ("no authentication") and CONNECT request for hostport,
// sent together.
func socksRequest(hostport string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	var port uint16
	if _, err := fmt.Sscan(portStr, &port); err != nil {
		return nil, fmt.Errorf("bad port in %q", hostport)
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
			return nil, fmt.Errorf("host name too long: %q", host)
		}
		req = append(append(req, 3, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(req, port), nil
}

// readSocksReply reads the agent's answers to the greeting and the request; a refusal is a
// *refusedError.
func readSocksReply(c io.Reader, hostport string) error {
	var resp [4]byte
	if _, err := io.ReadFull(c, resp[:2]); err != nil {
		return fmt.Errorf("socks greeting: %w", err)
	}
	if resp[0] != 5 || resp[1] != 0 {
		return fmt.Errorf("socks: the agent refused the method (%d %d)", resp[0], resp[1])
	}
	if _, err := io.ReadFull(c, resp[:4]); err != nil {
		return fmt.Errorf("socks reply: %w", err)
	}
	if resp[1] != 0 {
		msg := socksErrors[resp[1]]
		if msg == "" {
			msg = fmt.Sprintf("code %d", resp[1])
		}
		return &refusedError{fmt.Sprintf("connect %s from the cluster: %s", hostport, msg)}
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
			return err
		}
		skip = int(l[0]) + 2
	}
	_, err := io.ReadFull(c, make([]byte, skip))
	return err
}

// DialUDP opens a relay stream for datagrams to dst.
func (d *Dialer) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
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
