package wire

// The UDP relay carries datagrams over one reliable stream (a port-forward stream to
// UDPRelayPort). SOCKS5's UDP ASSOCIATE needs a UDP path between client and proxy, which a
// port-forward cannot give, so kt frames the datagrams instead.
//
// A stream starts with the 4-byte magic "KTU" followed by the version byte RelayVersion, sent
// by the client. Then both sides send frames:
//
//	+--------+------+-----+------------+------+---------+
//	| length | type | alen|  address   | port | payload |
//	|   2    |  1   |  1  | 4 or 16    |  2   |   ...   |
//	+--------+------+-----+------------+------+---------+
//
// length counts every byte after itself, big-endian. type is FrameDatagram or FrameError.
// For a datagram from the client, address and port name the destination; from the agent,
// they name the source of a reply. alen is 4 (IPv4) or 16 (IPv6). An error frame has no
// address (alen 0, port 0) and its payload is a UTF-8 message; the agent closes the stream
// after sending one. One stream is one UDP socket on the agent: a laptop flow gets its own
// stream, so replies map back to it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// RelayMagic opens every relay stream.
var RelayMagic = [4]byte{'K', 'T', 'U', RelayVersion}

// RelayVersion is the framing version.
const RelayVersion = 1

// Frame types.
const (
	FrameDatagram = 1
	FrameError    = 0xff
)

// MaxDatagram is the largest payload a frame can carry.
const MaxDatagram = 65535 - 1 - 1 - 16 - 2

// Frame is one relay frame.
type Frame struct {
	Type    byte
	Addr    netip.AddrPort // destination (client to agent) or source (agent to client)
	Payload []byte
}

// ErrBadFrame reports a frame that breaks the framing rules.
var ErrBadFrame = errors.New("malformed relay frame")

// AppendFrame appends f's encoding to b.
func AppendFrame(b []byte, f Frame) ([]byte, error) {
	var alen int
	if f.Type == FrameDatagram {
		if !f.Addr.IsValid() {
			return b, fmt.Errorf("%w: datagram without an address", ErrBadFrame)
		}
		alen = 4
		if !f.Addr.Addr().Unmap().Is4() {
			alen = 16
		}
	}
	n := 1 + 1 + alen + 2 + len(f.Payload)
	if len(f.Payload) > MaxDatagram {
		return b, fmt.Errorf("%w: payload of %d bytes is too large", ErrBadFrame, len(f.Payload))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, f.Type, byte(alen))
	switch alen {
	case 4:
		a := f.Addr.Addr().Unmap().As4()
		b = append(b, a[:]...)
	case 16:
		a := f.Addr.Addr().As16()
		b = append(b, a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, f.Addr.Port())
	return append(b, f.Payload...), nil
}

// ReadFrame reads one frame. buf, when large enough, is reused for the payload.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < 4 {
		return Frame{}, fmt.Errorf("%w: length %d is shorter than a header", ErrBadFrame, n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return Frame{}, fmt.Errorf("%w: truncated: %v", ErrBadFrame, err)
	}
	f := Frame{Type: buf[0]}
	alen := int(buf[1])
	if 2+alen+2 > n {
		return Frame{}, fmt.Errorf("%w: address length %d overruns the frame", ErrBadFrame, alen)
	}
	var addr netip.Addr
	switch alen {
	case 0:
	case 4:
		addr = netip.AddrFrom4([4]byte(buf[2:6]))
	case 16:
		addr = netip.AddrFrom16([16]byte(buf[2:18]))
	default:
		return Frame{}, fmt.Errorf("%w: address length %d", ErrBadFrame, alen)
	}
	port := binary.BigEndian.Uint16(buf[2+alen:])
	f.Payload = buf[2+alen+2:]
	switch f.Type {
	case FrameDatagram:
		if alen == 0 {
			return Frame{}, fmt.Errorf("%w: datagram without an address", ErrBadFrame)
		}
		f.Addr = netip.AddrPortFrom(addr, port)
	case FrameError:
	default:
		return Frame{}, fmt.Errorf("%w: unknown type %#x", ErrBadFrame, f.Type)
	}
	return f, nil
}
