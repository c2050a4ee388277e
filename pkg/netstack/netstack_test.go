package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// memDevice is an in-memory TUN: what the "kernel" (a client stack) sends arrives on in.
type memDevice struct {
	in     chan []byte
	out    func([]byte)
	closed chan struct{}
	once   sync.Once
}

func (d *memDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-d.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-d.closed:
		return 0, net.ErrClosed
	}
}

func (d *memDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.out(append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}

func (d *memDevice) BatchSize() int { return 1 }
func (d *memDevice) Close() error   { d.once.Do(func() { close(d.closed) }); return nil }

// laptop builds a client stack (address 10.1.0.2) wired to a memDevice.
func laptop(t *testing.T) (*stack.Stack, *memDevice) {
	t.Helper()
	cs := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	cep := channel.New(256, 1500, "")
	if err := cs.CreateNIC(1, cep); err != nil {
		t.Fatal(err)
	}
	cs.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4([4]byte{10, 1, 0, 2}).WithPrefix()}, stack.AddressProperties{})
	cs.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	dev := &memDevice{in: make(chan []byte, 256), closed: make(chan struct{})}
	dev.out = func(p []byte) {
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		cep.InjectInbound(ipv4.ProtocolNumber, pb)
		pb.DecRef()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			pkt := cep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			var b []byte
			for _, s := range pkt.AsSlices() {
				b = append(b, s...)
			}
			pkt.DecRef()
			select {
			case dev.in <- b:
			case <-dev.closed:
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); cs.Close() })
	return cs, dev
}

// fakeCluster dials loopback servers for port 80 (TCP echo after half-close) and 53 (UDP
// echo), and refuses everything else.
type fakeCluster struct {
	tcpAddr, udpAddr string
	dialed           []netip.AddrPort
	mu               sync.Mutex
}

func (f *fakeCluster) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	f.mu.Lock()
	f.dialed = append(f.dialed, dst)
	f.mu.Unlock()
	if dst.Port() == 79 { // a server that answers and closes first, as HTTP/1.0 and "Connection: close" do
		a, b := net.Pipe()
		go func() { b.Write([]byte("bye")); b.Close() }()
		return a, nil
	}
	if dst.Port() != 80 {
		return nil, errors.New("connection refused")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.tcpAddr)
}

func (f *fakeCluster) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "udp", f.udpAddr)
}

func servers(t *testing.T) *fakeCluster {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("got:"), b...))
				c.Close()
			}()
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("udp:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { l.Close(); pc.Close() })
	return &fakeCluster{tcpAddr: l.Addr().String(), udpAddr: pc.LocalAddr().String()}
}

func TestTCPHalfCloseAndReset(t *testing.T) {
	cs, dev := laptop(t)
	fc := servers(t)
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	s, err := New(dev, fc, Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 80}
	for i := 0; i < 3; i++ {
		c, err := gonet.DialContextTCP(ctx, cs, dst, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatalf("dial through the stack: %v", err)
		}
		msg := strings.Repeat(fmt.Sprint(i), 100000)
		go func() { c.Write([]byte(msg)); c.CloseWrite() }()
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "got:"+msg {
			t.Fatalf("flow %d: read %d bytes, %v", i, len(b), err)
		}
		c.Close()
	}
	// a refused upstream dial resets the client's connection attempt
	_, err = gonet.DialContextTCP(ctx, cs, tcpip.FullAddress{Addr: dst.Addr, Port: 81}, ipv4.ProtocolNumber)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial of a refused port: %v, want connection refused", err)
	}
	if got := fc.dialed[0]; got != netip.MustParseAddrPort("10.96.0.7:80") {
		t.Errorf("dialer saw %v, want the original destination", got)
	}
	if st := s.Stats(); st.TCPFlows != 4 || st.TCPFailed != 1 {
		t.Errorf("stats %+v", st)
	}
	s.Close()
	s.Close() // idempotent
	checkGoroutines(t, before)
}

// The laptop's kernel may reuse a source port for a new connection to the same address while
// the stack still holds the old one in TIME-WAIT, as it does when the cluster's side closed
// first. gVisor hands such a SYN on only to a listening endpoint, never to the forwarder:
// with its default 60 s TIME-WAIT the new connection hung (one in about 3000 new connections
// to one pod, in a benchmark).
func TestSourcePortReusedAfterTheServerClosedFirst(t *testing.T) {
	cs, dev := laptop(t)
	s, err := New(dev, servers(t), Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 1, 0, 2}), Port: 40079}
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 79}
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t0 := time.Now()
		c, err := gonet.DialTCPWithBind(ctx, cs, local, dst, ipv4.ProtocolNumber)
		cancel()
		if err != nil {
			t.Fatalf("connection %d from the same port: %v after %s", i, err, time.Since(t0).Round(time.Millisecond))
		}
		b, err := io.ReadAll(c)
		if string(b) != "bye" || err != nil {
			t.Fatalf("connection %d: read %q, %v", i, b, err)
		}
		c.Close()
		time.Sleep(50 * time.Millisecond) // the FIN exchange ends
	}
}

func TestUDP(t *testing.T) {
	cs, dev := laptop(t)
	s, err := New(dev, servers(t), Options{MTU: 1500, UDPIdle: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := gonet.DialUDP(cs, nil, &tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 10}), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two"} {
		c.Write([]byte(m))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "udp:"+m {
			t.Fatalf("udp reply %q, %v", buf[:n], err)
		}
	}
	if st := s.Stats(); st.UDPFlows != 1 {
		t.Errorf("two datagrams of one flow made %d flows", st.UDPFlows)
	}
}

func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+4 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// earlyCluster is a fakeCluster that can dial early. Its confirm waits until the client's
// first bytes went up, which an early dial must send before the answer, and then refuses
// while refuse is set.
type earlyCluster struct {
	*fakeCluster
	early  atomic.Int32
	refuse atomic.Bool
}

type firstWrite struct {
	net.Conn
	once  sync.Once
	wrote chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.wrote) })
	return w.Conn.Write(p)
}

func (w *firstWrite) CloseWrite() error { return w.Conn.(*net.TCPConn).CloseWrite() }

func (f *earlyCluster) DialTCPEarly(ctx context.Context, dst netip.AddrPort) (net.Conn, func(context.Context) error, error) {
	f.early.Add(1)
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.tcpAddr)
	if err != nil {
		return nil, nil, err
	}
	w := &firstWrite{Conn: c, wrote: make(chan struct{})}
	return w, func(ctx context.Context) error {
		select {
		case <-w.wrote:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.refuse.Load() {
			c.Close()
			return errors.New("connection refused")
		}
		return nil
	}, nil
}

// exchange sends msg on a new connection to dst through the stack and returns the answer.
func exchange(ctx context.Context, cs *stack.Stack, dst tcpip.FullAddress, msg string) (string, error) {
	c, err := gonet.DialContextTCP(ctx, cs, dst, ipv4.ProtocolNumber)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.Write([]byte(msg))
	c.CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestWarmDestinationsAreDialledEarly(t *testing.T) {
	cs, dev := laptop(t)
	fc := &earlyCluster{fakeCluster: servers(t)}
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	s, err := New(dev, fc, Options{MTU: 1500, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 80}
	for i := range 3 {
		got, err := exchange(ctx, cs, dst, fmt.Sprint("hello ", i))
		if err != nil || got != fmt.Sprint("got:hello ", i) {
			t.Fatalf("connection %d: %q %v", i, got, err)
		}
	}
	// The first connection waited for the dial; the next two went early, their bytes on the
	// way before the answer (confirm waits for them).
	if n := len(fc.dialed); n != 1 {
		t.Errorf("%d dials waited for, want 1 (the first connection)", n)
	}
	if n := fc.early.Load(); n != 2 {
		t.Errorf("%d early dials, want 2", n)
	}
	// A cold destination still waits, and a refusal still refuses the handshake.
	if _, err := exchange(ctx, cs, tcpip.FullAddress{Addr: dst.Addr, Port: 81}, "x"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("a refused cold port: %v, want connection refused", err)
	}
	if n := fc.early.Load(); n != 2 {
		t.Errorf("a cold destination was dialled early")
	}

	// The warm destination refuses now: the client's accepted connection is reset, with no
	// answer, and the destination is cold again: the next connection is refused at the handshake.
	fc.refuse.Store(true)
	c, err := gonet.DialContextTCP(ctx, cs, dst, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("a warm destination: %v, want the handshake done at once", err)
	}
	c.Write([]byte("a request"))
	if b, err := io.ReadAll(c); err == nil || !strings.Contains(err.Error(), "reset") || len(b) > 0 {
		t.Errorf("a warm destination that refused: %q %v, want a reset", b, err)
	}
	c.Close()
	fc.fakeCluster.tcpAddr = "127.0.0.1:1" // the cold dial is refused too
	if _, err := exchange(ctx, cs, dst, "again"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("after the refusal: %v, want a refused handshake", err)
	}
	if n := fc.early.Load(); n != 3 {
		t.Errorf("%d early dials, want 3: a refusal must make the destination cold", n)
	}
	if st := s.Stats(); st.TCPFlows != 6 || st.TCPFailed != 3 {
		t.Errorf("stats %+v, want 6 flows, 3 failed", st)
	}
	s.Close()
	checkGoroutines(t, before)
}

func TestWarmthExpiresAndCanBeTurnedOff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		warmFor time.Duration
		wait    time.Duration
	}{{"expired", 100 * time.Millisecond, 300 * time.Millisecond}, {"off", -1, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cs, dev := laptop(t)
			fc := &earlyCluster{fakeCluster: servers(t)}
			s, err := New(dev, fc, Options{MTU: 1500, WarmFor: tc.warmFor})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 80}
			for range 2 {
				if got, err := exchange(ctx, cs, dst, "m"); err != nil || got != "got:m" {
					t.Fatalf("%q %v", got, err)
				}
				time.Sleep(tc.wait)
			}
			if n := fc.early.Load(); n != 0 {
				t.Errorf("%d early dials, want 0", n)
			}
		})
	}
}

// slowRefusal is an earlyCluster whose early streams fail the client's first write at once
// (the stream was refused and closed) while the refusal itself is told a little later, as a
// tunnel may tell them in either order.
type slowRefusal struct{ *earlyCluster }

type brokenConn struct{ net.Conn }

func (brokenConn) Write([]byte) (int, error) { return 0, errors.New("stream closed") }

func (f *slowRefusal) DialTCPEarly(ctx context.Context, dst netip.AddrPort) (net.Conn, func(context.Context) error, error) {
	if !f.refuse.Load() {
		return f.earlyCluster.DialTCPEarly(ctx, dst)
	}
	f.early.Add(1)
	a, b := net.Pipe()
	b.Close()
	return brokenConn{a}, func(context.Context) error {
		time.Sleep(200 * time.Millisecond)
		return errors.New("connection refused")
	}, nil
}

// The client's connection to a warm destination that refuses is reset, also when the write
// of its first bytes fails before the refusal is told: the write's failure must not close
// the connection first (a FIN, which curl reports as an empty reply).
func TestAnEarlyWriteThatFailsStillResets(t *testing.T) {
	cs, dev := laptop(t)
	fc := &slowRefusal{&earlyCluster{fakeCluster: servers(t)}}
	s, err := New(dev, fc, Options{MTU: 1500, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 80}
	if got, err := exchange(ctx, cs, dst, "warm"); err != nil || got != "got:warm" {
		t.Fatalf("%q %v", got, err)
	}
	fc.refuse.Store(true)
	c, err := gonet.DialContextTCP(ctx, cs, dst, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("a warm destination: %v, want the handshake done at once", err)
	}
	defer c.Close()
	c.Write([]byte("a request"))
	if b, err := io.ReadAll(c); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("a warm destination that refused after the write failed: %q %v, want a reset", b, err)
	}
	if n := fc.early.Load(); n != 1 {
		t.Errorf("%d early dials, want 1", n)
	}
}
