// Package netstack runs a user-space TCP/IP stack (gVisor's) behind a packet device such as a
// TUN. It terminates every TCP connection and UDP flow that arrives and hands it to a Dialer,
// which carries it on; it knows nothing about Kubernetes.
//
// TCP follows tailscale's netstack: the upstream connection is dialled before the handshake
// with the local client completes, a failed dial answers the SYN with a reset, and each
// direction's EOF is passed on as a half-close. The exception is a destination that accepted
// a connection a moment ago (Options.WarmFor), through a Dialer that can send early
// (EarlyDialer): the handshake completes at once and the client's first bytes follow the dial
// on their way, saving the round trip the dial waits for. If the destination refuses after all,
// the client's connection is reset.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/pipe"
)

// Device is packet I/O: wireguard-go's tun.Device satisfies it, and tests use in-memory ones.
type Device interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Close() error
}

// OffloadDevice is a Device that also passes TCP packets of up to OffloadMaxSize bytes whole
// both ways, their segmentation and checksums left to the kernel (Linux's TUN with virtio-net
// headers, pkg/tun). The stack then sends large packets with only the pseudo-header sum in
// their checksum, written straight from its buffers (no copy into a batch, no coalescing by
// the device, no checksum over the payload), and takes the kernel's large packets as they
// are instead of cut to the MTU and summed by the device.
type OffloadDevice interface {
	Device
	// Offload reports whether ReadOffload and WriteOffload work on this device.
	Offload() bool
	OffloadMaxSize() int
	// ReadOffload reads one IP packet into buf (OffloadMaxSize bytes and a little more) and
	// returns the part of buf that holds it; a TCP checksum may be partial.
	ReadOffload(buf []byte) ([]byte, error)
	// WriteOffload writes one IP packet in pieces. A TCP payload longer than mss (0: none)
	// is cut into segments; csumOffset (0: none) asks for the checksum at csumStart+csumOffset
	// to be completed.
	WriteOffload(pkt [][]byte, ipv6 bool, hdrLen, mss, csumStart, csumOffset uint16) error
}

// gsoEndpoint is the channel endpoint with the host's segmentation offload, up to max bytes.
type gsoEndpoint struct {
	*channel.Endpoint
	max uint32
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *gsoEndpoint) GSOMaxSize() uint32 { return e.max }

// Dialer carries the flows on.
type Dialer interface {
	// DialTCP connects to dst. An error makes the stack reset the client's connection.
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DialUDP returns a datagram conn to dst: each Write sends one datagram, each Read
	// returns one reply.
	DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// EarlyDialer is a Dialer that can carry a TCP connection on before its destination answers.
type EarlyDialer interface {
	Dialer
	// DialTCPEarly asks for a connection to dst and returns at once: what is written goes
	// after the request. confirm waits for the destination's answer; the stack calls it
	// before the first Read, and resets the client's connection when it fails.
	DialTCPEarly(ctx context.Context, dst netip.AddrPort) (c net.Conn, confirm func(context.Context) error, err error)
}

// Options tune the stack.
type Options struct {
	MTU int
	// Offset is the headroom the device needs in front of each packet (wireguard-go's
	// Linux TUN needs 10 bytes for the virtio header).
	Offset int
	// DialTimeout bounds one upstream dial.
	DialTimeout time.Duration
	// UDPIdle closes a UDP flow without traffic for this long.
	UDPIdle time.Duration
	// WarmFor is how long after a TCP destination accepted a connection that new connections
	// to it are carried on early, with an EarlyDialer (default 1 minute; negative: never).
	WarmFor time.Duration
}

// Stack is a running user-space stack.
type Stack struct {
	opts   Options
	dev    Device
	off    OffloadDevice // dev, when it takes whole TCP packets
	dialer Dialer
	stack  *stack.Stack
	ep     *channel.Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu    sync.Mutex
	conns map[io.Closer]struct{}
	warm  map[netip.AddrPort]time.Time // when each destination last accepted a connection
	stats Stats
}

// maxWarm bounds the destinations remembered as warm.
const maxWarm = 4096

// Stats counts flows.
type Stats struct {
	TCPFlows, TCPFailed, UDPFlows int64
}

const nicID = 1

// New starts a stack on dev that hands flows to d.
func New(dev Device, d Dialer, opts Options) (*Stack, error) {
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 15 * time.Second
	}
	if opts.UDPIdle == 0 {
		opts.UDPIdle = 60 * time.Second
	}
	if opts.WarmFor == 0 {
		opts.WarmFor = time.Minute
	}
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	ep := channel.New(512, uint32(opts.MTU), "")
	// Packets come from the local kernel: their checksums need no second check.
	ep.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	var link stack.LinkEndpoint = ep
	off, _ := dev.(OffloadDevice)
	if off != nil && off.Offload() {
		ep.SupportedGSOKind = stack.HostGSOSupported
		link = &gsoEndpoint{Endpoint: ep, max: uint32(off.OffloadMaxSize())}
	} else {
		off = nil
	}
	if err := st.CreateNIC(nicID, link); err != nil {
		return nil, fmt.Errorf("create NIC: %s", err)
	}
	// Accept packets for any address and answer from it: the stack stands in for the cluster.
	st.SetPromiscuousMode(nicID, true)
	st.SetSpoofing(nicID, true)
	st.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	sack := tcpip.TCPSACKEnabled(true)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// The far side of the stack is the local kernel: a small window fills the pipe, and the
	// buffers are the client's main memory cost under load (512 KiB per flow cost 5 MiB more
	// at the peak of eight downloads than 256 KiB, for no measurable speed).
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 128 << 10, Max: 256 << 10}
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 128 << 10, Max: 256 << 10}
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
	// No TIME-WAIT: gVisor hands a SYN that reuses the 4-tuple of a connection in TIME-WAIT
	// only to a listening endpoint, never to the forwarder, so the laptop's new connection
	// from a reused source port hung until the old one's 60 s ran out. TIME-WAIT guards
	// against old segments of a lossy path; this one is the local kernel's TUN.
	tw := tcpip.TCPTimeWaitTimeoutOption(0)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &tw)

	ctx, cancel := context.WithCancel(context.Background())
	s := &Stack{opts: opts, dev: dev, off: off, dialer: d, stack: st, ep: ep, ctx: ctx, cancel: cancel, conns: map[io.Closer]struct{}{}, warm: map[netip.AddrPort]time.Time{}}
	tcpFwd := tcp.NewForwarder(st, 0, 4096, s.handleTCP)
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(st, s.handleUDP)
	st.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)

	s.wg.Add(2)
	go s.inbound()
	go s.outbound()
	return s, nil
}

// Stats returns flow counts so far.
func (s *Stack) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// inbound moves packets from the device into the stack.
func (s *Stack) inbound() {
	defer s.wg.Done()
	if s.off != nil {
		s.inboundOffload()
		return
	}
	batch := min(max(s.dev.BatchSize(), 1), 64)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, s.opts.Offset+s.opts.MTU+64)
	}
	sizes := make([]int, batch)
	for {
		n, err := s.dev.Read(bufs, sizes, s.opts.Offset)
		for i := 0; i < n; i++ {
			pkt := bufs[i][s.opts.Offset : s.opts.Offset+sizes[i]]
			s.inject(pkt)
		}
		if err != nil && s.readFailed(err) {
			return
		}
	}
}

// inboundOffload moves packets from the device into the stack, large TCP ones whole.
func (s *Stack) inboundOffload() {
	buf := make([]byte, s.off.OffloadMaxSize()+64)
	for {
		pkt, err := s.off.ReadOffload(buf)
		if err != nil {
			s.readFailed(err) // a closed device, or one that went away
			return
		}
		s.inject(pkt)
	}
}

// inject hands one packet from the device to the stack, which copies it.
func (s *Stack) inject(pkt []byte) {
	if len(pkt) == 0 {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
		proto = header.IPv4ProtocolNumber
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	s.ep.InjectInbound(proto, pb)
	pb.DecRef()
}

// readFailed logs a device read error and reports whether the device is gone.
func (s *Stack) readFailed(err error) bool {
	if s.ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		klog.Background().V(1).Info("netstack: device read", "err", err)
	}
	return s.ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isClosedFile(err)
}

func isClosedFile(err error) bool { return errors.Is(err, os.ErrClosed) }

// outbound moves packets from the stack to the device, in batches.
func (s *Stack) outbound() {
	defer s.wg.Done()
	if s.off != nil {
		s.outboundOffload()
		return
	}
	batch := min(max(s.dev.BatchSize(), 1), 64)
	bufs := make([][]byte, 0, batch)
	store := make([][]byte, batch)
	for i := range store {
		store[i] = make([]byte, s.opts.Offset+s.opts.MTU+64)
	}
	for {
		pkt := s.ep.ReadContext(s.ctx)
		if pkt == nil {
			return
		}
		bufs = bufs[:0]
		for pkt != nil {
			b := store[len(bufs)][:s.opts.Offset]
			for _, sl := range pkt.AsSlices() {
				b = append(b, sl...)
			}
			pkt.DecRef()
			store[len(bufs)] = b[:cap(b)] // keep a grown buffer
			bufs = append(bufs, b)
			if len(bufs) == batch {
				break
			}
			pkt = s.ep.Read()
		}
		if _, err := s.dev.Write(bufs, s.opts.Offset); err != nil && s.ctx.Err() == nil {
			klog.Background().V(4).Info("netstack: device write", "err", err)
		}
	}
}

// outboundOffload writes each packet from the stack's own buffers, segmentation and
// checksum left to the device.
func (s *Stack) outboundOffload() {
	for {
		pkt := s.ep.ReadContext(s.ctx)
		if pkt == nil {
			return
		}
		g := pkt.GSOOptions
		var hdrLen, mss, csumStart, csumOffset uint16
		if g.Type == stack.GSOTCPv4 || g.Type == stack.GSOTCPv6 {
			hdrLen = uint16(pkt.HeaderSize())
			if pkt.Data().Size() > int(g.MSS) {
				mss = g.MSS
			}
			if g.NeedsCsum {
				csumStart, csumOffset = g.L3HdrLen, g.CsumOffset
			}
		}
		err := s.off.WriteOffload(pkt.AsSlices(), pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber, hdrLen, mss, csumStart, csumOffset)
		pkt.DecRef()
		if err != nil && s.ctx.Err() == nil {
			klog.Background().V(4).Info("netstack: device write", "err", err)
		}
	}
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

func (s *Stack) track(c io.Closer) (untrack func()) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	if ed, ok := s.dialer.(EarlyDialer); ok && s.isWarm(dst) {
		s.handleTCPEarly(r, ed, addrPort(id.RemoteAddress, id.RemotePort), dst)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.DialTimeout)
	up, err := s.dialer.DialTCP(ctx, dst)
	cancel()
	s.settle(dst, err)
	if err != nil {
		klog.FromContext(ctx).V(4).Info("netstack: tcp dial failed; resetting", "dst", dst, "err", err)
		r.Complete(true)
		return
	}
	c, _ := s.accept(r, dst)
	if c == nil {
		up.Close()
		return
	}
	defer s.track(c)()
	defer s.track(up)()
	klog.FromContext(ctx).V(4).Info("netstack: tcp flow", "src", addrPort(id.RemoteAddress, id.RemotePort), "dst", dst)
	pipe.Conns(c, up)
}

// handleTCPEarly completes the handshake with the client while the dial to a warm
// destination is on its way, and resets the client's connection if the dial fails.
func (s *Stack) handleTCPEarly(r *tcp.ForwarderRequest, ed EarlyDialer, src, dst netip.AddrPort) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.DialTimeout)
	defer cancel()
	up, confirm, err := ed.DialTCPEarly(ctx, dst)
	if err != nil {
		s.settle(dst, err)
		klog.FromContext(ctx).V(4).Info("netstack: early tcp dial failed; resetting", "dst", dst, "err", err)
		r.Complete(true)
		return
	}
	c, ep := s.accept(r, dst)
	if c == nil {
		up.Close()
		s.mu.Lock()
		s.stats.TCPFlows++
		s.stats.TCPFailed++
		s.mu.Unlock()
		return
	}
	e := &earlyConn{Conn: up, confirm: func() error {
		err := confirm(ctx)
		cancel()
		s.settle(dst, err)
		if err != nil {
			klog.FromContext(ctx).V(4).Info("netstack: early tcp dial failed; resetting", "dst", dst, "err", err)
			ep.Abort()
		}
		return err
	}}
	defer s.track(c)()
	defer s.track(up)()
	klog.FromContext(ctx).V(4).Info("netstack: early tcp flow", "src", src, "dst", dst)
	pipe.Conns(c, e)
}

// accept completes the client's handshake, with Nagle's delay off, or resets it when the
// stack cannot take it.
func (s *Stack) accept(r *tcp.ForwarderRequest, dst netip.AddrPort) (*gonet.TCPConn, tcpip.Endpoint) {
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		klog.Background().V(4).Info("netstack: tcp endpoint", "dst", dst, "err", terr)
		r.Complete(true)
		return nil, nil
	}
	r.Complete(false)
	ep.SocketOptions().SetDelayOption(false)
	return gonet.NewTCPConn(&wq, ep), ep
}

// settle counts a TCP flow by the outcome of its dial and remembers whether dst accepts.
func (s *Stack) settle(dst netip.AddrPort, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.TCPFlows++
	if err != nil {
		s.stats.TCPFailed++
		delete(s.warm, dst)
		return
	}
	if s.opts.WarmFor < 0 {
		return
	}
	now := time.Now()
	if _, ok := s.warm[dst]; !ok && len(s.warm) >= maxWarm {
		for a, t := range s.warm {
			if now.Sub(t) > s.opts.WarmFor {
				delete(s.warm, a)
			}
		}
		if len(s.warm) >= maxWarm {
			return
		}
	}
	s.warm[dst] = now
}

func (s *Stack) isWarm(dst netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.warm[dst]
	return ok && time.Since(t) <= s.opts.WarmFor
}

// earlyConn is an early dial's connection: its first Read waits for the destination's answer.
type earlyConn struct {
	net.Conn
	confirm func() error
	once    sync.Once
	err     error
}

// confirmed waits for the dial's outcome, once; a failure has reset the client's connection.
func (e *earlyConn) confirmed() error {
	e.once.Do(func() { e.err = e.confirm() })
	return e.err
}

func (e *earlyConn) Read(p []byte) (int, error) {
	if err := e.confirmed(); err != nil {
		return 0, err
	}
	return e.Conn.Read(p)
}

// Write passes the client's bytes on before the dial is confirmed. A write that fails (the
// destination refused meanwhile) waits for the outcome first, so that the client's connection
// is reset rather than closed: the copy that ends on this error closes it next.
func (e *earlyConn) Write(p []byte) (int, error) {
	n, err := e.Conn.Write(p)
	if err != nil {
		e.confirmed()
	}
	return n, err
}

// CloseWrite passes the client's half-close on.
func (e *earlyConn) CloseWrite() error {
	if cw, ok := e.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return e.Conn.Close()
}

func (s *Stack) handleUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		klog.Background().V(4).Info("netstack: udp endpoint", "dst", dst, "err", terr)
		return
	}
	c := gonet.NewUDPConn(&wq, ep)
	s.mu.Lock()
	s.stats.UDPFlows++
	s.mu.Unlock()
	go func() {
		defer s.track(c)()
		defer c.Close()
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.DialTimeout)
		up, err := s.dialer.DialUDP(ctx, dst)
		cancel()
		if err != nil {
			klog.FromContext(ctx).V(4).Info("netstack: udp dial failed", "dst", dst, "err", err)
			return
		}
		defer s.track(up)()
		defer up.Close()
		klog.FromContext(ctx).V(4).Info("netstack: udp flow", "src", addrPort(id.RemoteAddress, id.RemotePort), "dst", dst)
		s.relayUDP(c, up)
	}()
}

// relayUDP copies datagrams both ways until neither side sends for UDPIdle.
func (s *Stack) relayUDP(local *gonet.UDPConn, up net.Conn) {
	var mu sync.Mutex
	last := time.Now()
	touch := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			touch()
			if _, err := local.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := local.Read(buf)
			if err != nil {
				up.Close()
				return
			}
			touch()
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	t := time.NewTicker(max(s.opts.UDPIdle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
			mu.Lock()
			idle := time.Since(last)
			mu.Unlock()
			if idle > s.opts.UDPIdle {
				return
			}
		}
	}
}

// Close stops the stack, ends every flow, and closes the device. It is idempotent and waits.
func (s *Stack) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		err = s.dev.Close()
		s.ep.Close()
		s.wg.Wait()
		s.stack.Close()
		s.stack.Wait()
	})
	return err
}
