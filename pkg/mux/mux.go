// Package mux carries many connections over one. The client's TCP flows share a few
// port-forward streams to the agent, so that a new connection costs one round trip to the
// agent instead of a new stream through the API server, the kubelet and the container runtime
// first. Each stream has its own flow-control window, a half-close (CloseWrite) and an abort
// (Close before both sides finished). It needs only the standard library: the agent uses it too.
//
// A frame is a 9-byte header (type, stream id, length) and, for data, length bytes. Opening a
// stream takes no round trip: data may follow the open frame at once, or travel with it. Both
// sides start with a receive window of Window bytes per stream and grant more as their reader
// consumes it.
package mux

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	frameOpen   byte = iota + 1 // a new stream; no payload
	frameData                   // length bytes of payload
	frameWindow                 // the receiver consumed length more bytes
	frameFin                    // the sender writes no more
	frameRst                    // abort: discard, and fail reads and writes
	frameMove                   // the sender writes no more here: the rest goes another way; length is an argument
)

const (
	headerLen  = 9
	maxPayload = 64 << 10
	// Window is the bytes in flight per stream and direction: enough for about 25 MiB/s at a
	// 20 ms round trip. Memory is only held while a reader falls behind.
	Window = 256 << 10
	// grantEvery is how much a reader consumes before it tells the sender.
	grantEvery = Window / 4
	// acceptBacklog is how many opened streams may wait for Accept before new ones are refused.
	acceptBacklog = 256
)

// ErrReset is returned by reads and writes on a stream the other side aborted.
var ErrReset = errors.New("mux: stream reset by the other side")

// ErrMoved is returned by reads after the other side called Move: the rest of its data comes
// another way, agreed outside the session.
var ErrMoved = errors.New("mux: the stream's data moved elsewhere")

// ErrClosed is returned by operations on a closed stream or session.
var ErrClosed = net.ErrClosed

var bufPool = sync.Pool{New: func() any { b := make([]byte, headerLen+maxPayload); return &b }}

// Session is one side of a multiplexed connection.
type Session struct {
	conn net.Conn

	wmu  sync.Mutex
	wbuf []byte

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	err     error

	accept chan *Stream
	done   chan struct{}
}

// Client starts the opening side of a session on c.
func Client(c net.Conn) *Session { return newSession(c, 1) }

// Server starts the accepting side of a session on c.
func Server(c net.Conn) *Session { return newSession(c, 2) }

func newSession(c net.Conn, firstID uint32) *Session {
	s := &Session{
		conn:    c,
		wbuf:    make([]byte, 2*headerLen+maxPayload),
		streams: map[uint32]*Stream{},
		nextID:  firstID,
		accept:  make(chan *Stream, acceptBacklog),
		done:    make(chan struct{}),
	}
	go s.recvLoop()
	return s
}

// Open starts a new stream and tells the other side at once.
func (s *Session) Open() (*Stream, error) {
	st, err := s.OpenDeferred()
	if err != nil {
		return nil, err
	}
	st.unopened = false
	if err := s.write(frameOpen, st.id, 0, nil); err != nil {
		s.remove(st.id)
		return nil, err
	}
	return st, nil
}

// OpenDeferred starts a new stream that the other side learns of with its first write (or
// CloseWrite), so that the opening and the first data travel in one frame. For protocols in
// which the opener speaks first, as SOCKS5.
func (s *Session) OpenDeferred() (*Stream, error) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	id := s.nextID
	s.nextID += 2
	st := newStream(s, id)
	st.unopened = true
	s.streams[id] = st
	s.mu.Unlock()
	return st, nil
}

// Accept waits for the other side to open a stream.
func (s *Session) Accept() (*Stream, error) {
	select {
	case st := <-s.accept:
		return st, nil
	case <-s.done:
		return nil, s.Err()
	}
}

// NumStreams is how many streams are open.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Done is closed when the session has ended; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended, or nil while it runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and every stream on it.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	return nil
}

func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	streams := s.streams
	s.streams = map[uint32]*Stream{}
	s.mu.Unlock()
	close(s.done)
	s.conn.Close()
	for _, st := range streams {
		st.abort(err)
	}
}

// write sends one frame, copying payload behind the header.
func (s *Session) write(typ byte, id, length uint32, payload []byte) error {
	return s.writeOpening(false, typ, id, length, payload)
}

// writeOpening sends one frame, after an open frame for the stream if open is set, in one write.
func (s *Session) writeOpening(open bool, typ byte, id, length uint32, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.wbuf[:0]
	if open {
		b = appendHeader(b, frameOpen, id, 0)
	}
	b = append(appendHeader(b, typ, id, length), payload...)
	return s.writeLocked(b)
}

func appendHeader(b []byte, typ byte, id, length uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(append(b, typ), id), length)
}

// writeFrame sends b, whose first headerLen bytes are free for the header.
func (s *Session) writeFrame(typ byte, id uint32, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	appendHeader(b[:0], typ, id, uint32(len(b)-headerLen))
	return s.writeLocked(b)
}

func (s *Session) writeLocked(b []byte) error {
	select {
	case <-s.done:
		return s.Err()
	default:
	}
	if _, err := s.conn.Write(b); err != nil {
		s.fail(fmt.Errorf("mux: %w", err))
		return s.Err()
	}
	return nil
}

func (s *Session) remove(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

func (s *Session) stream(id uint32) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

func (s *Session) recvLoop() {
	r := bufio.NewReaderSize(s.conn, maxPayload)
	var h [headerLen]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = io.EOF
			}
			s.fail(fmt.Errorf("mux: session ended: %w", err))
			return
		}
		typ, id, n := h[0], binary.BigEndian.Uint32(h[1:5]), binary.BigEndian.Uint32(h[5:9])
		if err := s.handle(r, typ, id, n); err != nil {
			s.fail(err)
			return
		}
	}
}

func (s *Session) handle(r *bufio.Reader, typ byte, id, n uint32) error {
	switch typ {
	case frameOpen:
		st := newStream(s, id)
		s.mu.Lock()
		if s.streams[id] != nil {
			s.mu.Unlock()
			return fmt.Errorf("mux: stream %d opened twice", id)
		}
		s.streams[id] = st
		s.mu.Unlock()
		select {
		case s.accept <- st:
		default:
			s.remove(id)
			return s.write(frameRst, id, 0, nil)
		}
	case frameData:
		if n > maxPayload {
			return fmt.Errorf("mux: frame of %d bytes exceeds %d", n, maxPayload)
		}
		c := chunk{}
		if n > smallChunk {
			c.pooled = bufPool.Get().(*[]byte)
			c.b = (*c.pooled)[:n]
		} else {
			c.b = make([]byte, n)
		}
		if _, err := io.ReadFull(r, c.b); err != nil {
			return fmt.Errorf("mux: session ended: %w", err)
		}
		if st := s.stream(id); st != nil {
			return st.push(c)
		}
		c.release() // for a stream closed here: the sender learns it, as TCP answers with a reset
		return s.write(frameRst, id, 0, nil)
	case frameWindow:
		if st := s.stream(id); st != nil {
			st.grant(int(n))
		}
	case frameFin, frameMove:
		if st := s.stream(id); st != nil {
			st.finished(typ == frameMove, n)
		}
	case frameRst:
		if st := s.stream(id); st != nil {
			st.reset()
		}
	default:
		return fmt.Errorf("mux: unknown frame type %d", typ)
	}
	return nil
}

type chunk struct {
	b      []byte
	pooled *[]byte
}

func (c chunk) release() {
	if c.pooled != nil {
		bufPool.Put(c.pooled)
	}
}

// Stream is one connection of a session. It is a net.Conn without deadlines.
type Stream struct {
	s  *Session
	id uint32

	wmu sync.Mutex // one writer at a time, so that a Write's frames are not interleaved

	mu       sync.Mutex
	cond     sync.Cond
	queue    []chunk
	queued   int
	consumed int    // read since the last grant
	credit   int    // bytes the other side can still take
	unopened bool   // Open was called, and no frame sent yet
	finSent  bool   // CloseWrite was called
	finRecv  bool   // the other side will send no more
	moved    bool   // ... here: it sent Move
	moveArg  uint32 // ... with this
	closed   bool   // Close was called
	err      error
}

// smallChunk is the size up to which a frame's payload is allocated on its own (larger ones
// take a pooled buffer) and joins the chunk queued before it.
const smallChunk = 4 << 10

func newStream(s *Session, id uint32) *Stream {
	st := &Stream{s: s, id: id, credit: Window}
	st.cond.L = &st.mu
	return st
}

func (st *Stream) push(c chunk) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.err != nil {
		c.release()
		return nil
	}
	if st.queued+len(c.b) > Window {
		c.release()
		return fmt.Errorf("mux: stream %d overran its window", st.id)
	}
	if len(c.b) == 0 {
		return nil // carries nothing: never queued (4 M empty frames took 284 MiB)
	}
	// Small chunks join the last one, so that what a stream holds is bounded by its window
	// whatever the frames' sizes: a chunk costs more than a byte.
	if n := len(st.queue); n > 0 && c.pooled == nil && st.queue[n-1].pooled == nil && len(st.queue[n-1].b)+len(c.b) <= smallChunk {
		st.queue[n-1].b = append(st.queue[n-1].b, c.b...)
		st.queued += len(c.b)
		st.cond.Broadcast()
		return nil
	}
	st.queue = append(st.queue, c)
	st.queued += len(c.b)
	st.cond.Broadcast()
	return nil
}

func (st *Stream) grant(n int) {
	st.mu.Lock()
	st.credit += n
	st.cond.Broadcast()
	st.mu.Unlock()
}

func (st *Stream) finished(moved bool, arg uint32) {
	st.mu.Lock()
	st.finRecv, st.moved, st.moveArg = true, moved, arg
	st.cond.Broadcast()
	st.mu.Unlock()
}

// abort fails the stream's reads and writes with err and drops what was not read.
func (st *Stream) abort(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.dropLocked()
	st.cond.Broadcast()
	st.mu.Unlock()
}

// reset ends the stream at the other side's reset. What arrived before it is still read, then
// ErrReset: a peer that answers and closes with data of ours unread (the agent refusing a
// connection whose first bytes came with the request) is heard.
func (st *Stream) reset() {
	st.mu.Lock()
	if st.err == nil {
		st.err = ErrReset
	}
	st.cond.Broadcast()
	st.mu.Unlock()
}

func (st *Stream) dropLocked() {
	for _, c := range st.queue {
		c.release()
	}
	st.queue, st.queued = nil, 0
}

// Read reads what the other side sent; io.EOF after its CloseWrite.
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	for len(st.queue) == 0 && !st.finRecv && st.err == nil && !st.closed {
		st.cond.Wait()
	}
	if st.closed {
		st.mu.Unlock()
		return 0, ErrClosed
	}
	if len(st.queue) == 0 {
		err := st.err
		moved := st.moved
		st.mu.Unlock()
		switch {
		case err != nil:
		case moved:
			err = ErrMoved
		default:
			err = io.EOF
		}
		return 0, err
	}
	n := 0
	for n < len(p) && len(st.queue) > 0 {
		c := &st.queue[0]
		m := copy(p[n:], c.b)
		n += m
		c.b = c.b[m:]
		if len(c.b) == 0 {
			c.release()
			st.queue[0] = chunk{}
			st.queue = st.queue[1:]
		}
	}
	st.queued -= n
	st.consumed += n
	grant := 0
	if st.consumed >= grantEvery && !st.finRecv {
		grant, st.consumed = st.consumed, 0
	}
	st.mu.Unlock()
	if grant > 0 {
		st.s.write(frameWindow, st.id, uint32(grant), nil)
	}
	return n, nil
}

// ID is the stream's number in its session.
func (st *Stream) ID() uint32 { return st.id }

// reserve waits until the other side can take at least one byte and returns how many, up to limit.
func (st *Stream) reserve(limit int) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.credit == 0 && st.err == nil && !st.closed && !st.finSent {
		st.cond.Wait()
	}
	switch {
	case st.closed || st.finSent:
		return 0, ErrClosed
	case st.err != nil:
		return 0, st.err
	}
	return min(limit, st.credit, maxPayload), nil
}

// spend takes n bytes of window; it reports whether the stream's open frame is still to go out.
func (st *Stream) spend(n int) (open bool) {
	st.mu.Lock()
	st.credit -= n
	open, st.unopened = st.unopened, false
	st.mu.Unlock()
	return open
}

// Write sends p, waiting for window as needed.
func (st *Stream) Write(p []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	written := 0
	for written < len(p) {
		n, err := st.reserve(len(p) - written)
		if err != nil {
			return written, err
		}
		open := st.spend(n)
		if err := st.s.writeOpening(open, frameData, st.id, uint32(n), p[written:written+n]); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// ReadFrom sends what r yields, reading straight into the frames it sends.
func (st *Stream) ReadFrom(r io.Reader) (int64, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var total int64
	for {
		n, err := st.reserve(maxPayload)
		if err != nil {
			return total, err
		}
		m, rerr := r.Read((*bp)[headerLen : headerLen+n])
		if m > 0 {
			if st.spend(m) {
				if err := st.s.write(frameOpen, st.id, 0, nil); err != nil {
					return total, err
				}
			}
			if err := st.s.writeFrame(frameData, st.id, (*bp)[:headerLen+m]); err != nil {
				return total, err
			}
			total += int64(m)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// CloseWrite tells the other side that no more data follows; reading goes on.
func (st *Stream) CloseWrite() error { return st.finish(frameFin, 0) }

// Move tells the other side that no more data follows on this stream because the rest goes
// another way: its reads return ErrMoved, not io.EOF, after the data sent so far. arg goes
// with it, for the other side's MoveArg (older peers ignore it).
func (st *Stream) Move(arg uint32) error { return st.finish(frameMove, arg) }

// MoveArg is the argument of the other side's Move, once reads return ErrMoved.
func (st *Stream) MoveArg() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.moveArg
}

func (st *Stream) finish(typ byte, arg uint32) error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.mu.Lock()
	if st.finSent || st.closed || st.err != nil {
		st.mu.Unlock()
		return nil
	}
	st.finSent = true
	open := st.unopened
	st.unopened = false
	st.cond.Broadcast()
	st.mu.Unlock()
	return st.s.writeOpening(open, typ, st.id, arg, nil)
}

// Close ends the stream as close(2) ends a TCP connection: with unread data the other side sees
// a reset; otherwise it reads to the end, and whatever it sends after that resets it.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	var send byte
	switch {
	case st.err != nil, st.unopened: // already reset or ended; or never heard of
	case st.queued > 0:
		send = frameRst
	case !st.finSent:
		send = frameFin
	}
	st.dropLocked()
	st.cond.Broadcast()
	st.mu.Unlock()
	st.s.remove(st.id)
	if send != 0 {
		st.s.write(send, st.id, 0, nil)
	}
	return nil
}

func (st *Stream) LocalAddr() net.Addr  { return st.s.conn.LocalAddr() }
func (st *Stream) RemoteAddr() net.Addr { return st.s.conn.RemoteAddr() }

// SetDeadline and the other deadline setters are not supported: they do nothing.
func (st *Stream) SetDeadline(time.Time) error      { return nil }
func (st *Stream) SetReadDeadline(time.Time) error  { return nil }
func (st *Stream) SetWriteDeadline(time.Time) error { return nil }
