package netstack

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// offloadDevice plays the kernel's part for WriteOffload: it completes partial checksums
// and cuts large TCP packets into segments, as Linux does for a TUN with virtio-net headers,
// before the client stack (which checks every checksum) gets them.
type offloadDevice struct {
	*memDevice
	mu             sync.Mutex
	large, partial int // packets written
	joined         int // packets read that the device made of several
	bad            []string
	held           []byte // a packet read that did not continue the one before it
}

func (d *offloadDevice) Offload() bool       { return true }
func (d *offloadDevice) OffloadMaxSize() int { return 65535 }

func (d *offloadDevice) fail(format string, args ...any) {
	d.mu.Lock()
	d.bad = append(d.bad, fmt.Sprintf(format, args...))
	d.mu.Unlock()
}

func (d *offloadDevice) WriteOffload(pkt [][]byte, ipv6 bool, hdrLen, mss, csumStart, csumOffset uint16) error {
	var b []byte
	for _, p := range pkt {
		b = append(b, p...)
	}
	if ipv6 || len(b) > d.OffloadMaxSize() {
		d.fail("packet of %d bytes, ipv6 %v", len(b), ipv6)
		return nil
	}
	ip := header.IPv4(b)
	if csumOffset == 0 {
		d.out(b) // complete as it is
		return nil
	}
	if int(csumStart) != int(ip.HeaderLength()) || csumOffset != header.TCPChecksumOffset {
		d.fail("checksum at %d+%d, TCP's is at %d+%d", csumStart, csumOffset, ip.HeaderLength(), header.TCPChecksumOffset)
		return nil
	}
	// The stack leaves the pseudo-header sum over the whole packet in the field.
	tcpLen := len(b) - int(csumStart)
	want := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	if got := binary.BigEndian.Uint16(b[csumStart+csumOffset:]); got != want {
		d.fail("partial checksum %#x, want the pseudo-header sum %#x", got, want)
		return nil
	}
	d.mu.Lock()
	d.partial++
	d.mu.Unlock()
	if mss == 0 {
		// The kernel sums from csumStart to the end, the field included, into the field.
		sum := checksum.Checksum(b[csumStart:], 0)
		binary.BigEndian.PutUint16(b[csumStart+csumOffset:], ^sum)
		d.out(b)
		return nil
	}
	th := header.TCP(b[csumStart:])
	if int(hdrLen) != int(csumStart)+int(th.DataOffset()) || len(b)-int(hdrLen) <= int(mss) {
		d.fail("GSO packet of %d bytes: header length %d, mss %d", len(b), hdrLen, mss)
		return nil
	}
	d.mu.Lock()
	d.large++
	d.mu.Unlock()
	payload := b[hdrLen:]
	for off := 0; off < len(payload); off += int(mss) {
		end := min(off+int(mss), len(payload))
		seg := append(append([]byte(nil), b[:hdrLen]...), payload[off:end]...)
		sip := header.IPv4(seg)
		sip.SetTotalLength(uint16(len(seg)))
		sip.SetID(ip.ID() + uint16(off/int(mss)))
		sip.SetChecksum(0)
		sip.SetChecksum(^sip.CalculateChecksum())
		st := header.TCP(seg[csumStart:])
		st.SetSequenceNumber(th.SequenceNumber() + uint32(off))
		if end < len(payload) {
			st.SetFlags(uint8(th.Flags() &^ (header.TCPFlagFin | header.TCPFlagPsh)))
		}
		st.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sip.SourceAddress(), sip.DestinationAddress(), uint16(len(seg)-int(csumStart)))
		st.SetChecksum(^checksum.Checksum(seg[csumStart:], xsum))
		d.out(seg)
	}
	return nil
}

// ReadOffload joins the client's TCP segments that continue one another into one packet with
// a partial checksum, as the kernel's segmentation offload hands them to the device.
func (d *offloadDevice) ReadOffload(buf []byte) ([]byte, error) {
	p := d.held
	d.held = nil
	if p == nil {
		select {
		case p = <-d.in:
		case <-d.closed:
			return nil, net.ErrClosed
		}
	}
	n := 1
	for len(p) < 48<<10 {
		var q []byte
		select {
		case q = <-d.in:
		default:
		}
		if q == nil {
			break
		}
		if !continues(p, q) {
			d.held = q
			break
		}
		p = append(p, q[header.IPv4(q).HeaderLength()+header.TCP(q[header.IPv4(q).HeaderLength():]).DataOffset():]...)
		n++
	}
	if n > 1 {
		ip := header.IPv4(p)
		ip.SetTotalLength(uint16(len(p)))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		th := header.TCP(p[ip.HeaderLength():])
		th.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(p)-int(ip.HeaderLength()))))
		d.mu.Lock()
		d.joined++
		d.mu.Unlock()
	}
	return buf[:copy(buf, p)], nil
}

// continues reports whether q is the TCP data segment that follows p's in the same flow,
// with the same headers.
func continues(p, q []byte) bool {
	pi, qi := header.IPv4(p), header.IPv4(q)
	if pi.Protocol() != uint8(header.TCPProtocolNumber) || qi.Protocol() != uint8(header.TCPProtocolNumber) ||
		pi.SourceAddress() != qi.SourceAddress() || pi.DestinationAddress() != qi.DestinationAddress() {
		return false
	}
	pt, qt := header.TCP(p[pi.HeaderLength():]), header.TCP(q[qi.HeaderLength():])
	plen := len(p) - int(pi.HeaderLength()) - int(pt.DataOffset())
	qlen := len(q) - int(qi.HeaderLength()) - int(qt.DataOffset())
	return pt.SourcePort() == qt.SourcePort() && pt.DestinationPort() == qt.DestinationPort() &&
		pt.Flags() == header.TCPFlagAck && qt.Flags()&^header.TCPFlagPsh == header.TCPFlagAck &&
		pt.DataOffset() == qt.DataOffset() && plen > 0 && qlen > 0 &&
		pt.SequenceNumber()+uint32(plen) == qt.SequenceNumber() && pt.AckNumber() == qt.AckNumber()
}

// TestOffloadDevice: on a device that passes whole packets, the stack sends TCP packets
// larger than the MTU with the pseudo-header sum in their checksum field, and the data
// arrives intact once they are cut and summed as the kernel does; the upload, joined into
// large packets with partial checksums as the kernel hands them over, arrives intact too.
func TestOffloadDevice(t *testing.T) {
	cs, mem := laptop(t)
	dev := &offloadDevice{memDevice: mem}
	s, err := New(dev, servers(t), Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, cs, tcpip.FullAddress{Addr: tcpip.AddrFrom4([4]byte{10, 96, 0, 7}), Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("dial through the stack: %v", err)
	}
	defer c.Close()
	msg := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, echoed back through WriteOffload
	go func() { c.Write([]byte(msg)); c.CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a dropped packet stalls the flow
	got, err := io.ReadAll(c)
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if err != nil || string(got) != "got:"+msg {
		t.Fatalf("read %d bytes, %v; want the 1 MiB echo intact (device saw: %q)", len(got), err, dev.bad)
	}
	for _, b := range dev.bad {
		t.Error(b)
	}
	if dev.large == 0 || dev.partial == 0 {
		t.Errorf("%d packets larger than the MTU, %d with a partial checksum: the stack did not use the offload", dev.large, dev.partial)
	}
	t.Logf("written: %d large, %d partial; read: %d joined", dev.large, dev.partial, dev.joined)
	if dev.joined == 0 {
		t.Errorf("the device joined no segments: the test did not send the stack a large packet")
	}
}
