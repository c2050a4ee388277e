package wire

// TCP flows from connect and forward travel as streams of mux sessions to MuxPort: a new
// connection then costs one round trip to the agent, not a new port-forward stream through the
// API server, the kubelet and the container runtime. A session starts with TokenLen random
// bytes from the client, its token, after which both sides speak pkg/mux. Every stream starts with a SOCKS5
// greeting and CONNECT request, sent together; the agent answers both in one write.
//
// A mux stream costs the agent a copy that a port-forward stream of its own does not (there it
// splices), so when a flow has received or sent MoveAfter bytes the client opens a stream to
// MovePort and sends the session's token and the flow's stream id (MoveRequest). The agent
// then ends the flow's data on the mux stream with a Move frame (cutting short a read from the
// target in progress: an upload's target may send nothing until it is over); the client,
// having read up to it, sends one byte on the new stream, and the agent sends the rest there.
// (Data sent on the new stream before the client reads it would stall the whole port-forward
// connection, the mux stream included.) Once that byte is sent, if the agent's Move offered
// MoveTakesUploads, the client ends its own data on the mux stream with a Move frame too and
// sends the rest of it on the new stream, after the byte; the agent reads the mux stream up to
// the Move, then the new stream.

import (
	"encoding/binary"
	"errors"
	"io"
)

// TokenLen is the length of a mux session's token.
const TokenLen = 16

// MoveTakesUploads, in the argument of the agent's Move frame, says that the agent reads the
// flow's own stream after the go-ahead: only then does the client move its data too. (Agents
// before it sent 0, and read nothing there.)
const MoveTakesUploads = 1

// MoveAfter is how many bytes a flow receives, or sends, on its mux stream before the client
// moves it.
const MoveAfter = 128 << 10

// MoveRequest is what the client sends first on a MovePort stream.
type MoveRequest struct {
	Token  [TokenLen]byte
	Stream uint32
}

// Append encodes r.
func (r MoveRequest) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint32(append(b, r.Token[:]...), r.Stream)
}

// ReadMoveRequest reads a MoveRequest.
func ReadMoveRequest(rd io.Reader) (MoveRequest, error) {
	var b [TokenLen + 4]byte
	if _, err := io.ReadFull(rd, b[:]); err != nil {
		return MoveRequest{}, errors.New("move request: " + err.Error())
	}
	var r MoveRequest
	copy(r.Token[:], b[:TokenLen])
	r.Stream = binary.BigEndian.Uint32(b[TokenLen:])
	return r, nil
}
