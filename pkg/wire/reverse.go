package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Reverse streams carry remote-forwarded connections (exchange, mesh, preview) from the agent
// to the client on port-forward streams of their own, instead of inside the SSH connection:
// the client keeps a few streams open to ReversePort, each introduced by a hello; when a
// connection arrives on a forwarded port, the agent takes an idle stream, sends "go" with the
// port and then the connection's bytes, and the client relays the stream to its local port.
// With no idle stream the connection goes over SSH as before. A newer generation (the client
// reconnected) makes the agent drop the older streams.
//
//	client → agent  hello: "KTRV" generation (uint64, big endian; newer streams are larger)
//	agent → client  go:    "KTGO" port (uint16), then the connection
var (
	reverseHello = [4]byte{'K', 'T', 'R', 'V'}
	reverseGo    = [4]byte{'K', 'T', 'G', 'O'}
)

// WriteReverseHello introduces a reverse stream of a generation.
func WriteReverseHello(w io.Writer, gen uint64) error {
	var b [12]byte
	copy(b[:], reverseHello[:])
	binary.BigEndian.PutUint64(b[4:], gen)
	_, err := w.Write(b[:])
	return err
}

// ReadReverseHello reads a hello and returns its generation.
func ReadReverseHello(r io.Reader) (uint64, error) {
	var b [12]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	if [4]byte(b[:4]) != reverseHello {
		return 0, fmt.Errorf("not a reverse stream hello")
	}
	return binary.BigEndian.Uint64(b[4:]), nil
}

// WriteReverseGo hands a stream a connection for port.
func WriteReverseGo(w io.Writer, port int) error {
	var b [6]byte
	copy(b[:], reverseGo[:])
	binary.BigEndian.PutUint16(b[4:], uint16(port))
	_, err := w.Write(b[:])
	return err
}

// ReadReverseGo waits for a go and returns its port.
func ReadReverseGo(r io.Reader) (int, error) {
	var b [6]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	if [4]byte(b[:4]) != reverseGo {
		return 0, fmt.Errorf("not a reverse stream go")
	}
	return int(binary.BigEndian.Uint16(b[4:])), nil
}
