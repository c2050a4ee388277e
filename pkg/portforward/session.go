package portforward

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream/spdy"
	corev1 "k8s.io/api/core/v1"
)

// session is the client end of a SPDY/3.1 connection to the kubelet's port-forward
// server, over any byte stream (a plain SPDY upgrade, or the API server's WebSocket tunnel,
// see dialer.go). It replaces spdystream
// on the data path: a data frame is read straight into a pooled buffer and handed to the
// stream's reader, where spdystream allocates every frame and passes it through two
// goroutines. Control frames (their header blocks share one zlib context per direction) go
// through spdystream's Framer.
//
// SPDY has no flow control that the kubelet honours: a stream whose reader falls behind
// by streamBuffer bytes holds up the whole connection, as it does with spdystream.
type session struct {
	conn net.Conn
	br   *bufio.Reader

	framer *spdy.Framer
	feed   feeder       // what the framer reads: nothing (kt parses what it reads itself)
	wbuf   bytes.Buffer // what it writes

	wmu    sync.Mutex // one frame per conn.Write; stream ids in the order they are written
	nextID uint32

	mu      sync.Mutex
	streams map[uint32]*spdyStream
	err     error // why the session ended
	done    chan struct{}

	pingEvery, silent time.Duration // pingPeriod and silentAfter when the session began
	heard             atomic.Int64  // when the last frame arrived, in Unix nanoseconds
	stalled           atomic.Bool   // the read loop waits for a slow local reader, not for the network
}

const (
	frameHeaderLen = 8
	maxDataFrame   = 32 << 10  // the kubelet writes frames of up to 32 KiB; so do we
	streamBuffer   = 512 << 10 // received, unread bytes per stream before the session waits
	replyTimeout   = 30 * time.Second
)

var (
	pingPeriod = 5 * time.Second // keeps proxies from closing an idle connection, and says it is alive
	// silentAfter ends a session from which nothing came for this long, pings unanswered:
	// when the network goes quiet (a laptop closed, a Wi-Fi change) the connection can look
	// open for many minutes, and every new stream would wait on it.
	silentAfter = 3 * pingPeriod
)

var (
	errSilent        = errors.New("port-forward tunnel went silent (pings unanswered)")
	errSessionClosed = errors.New("port-forward tunnel closed")
	errStreamReset   = errors.New("the kubelet refused the stream")
)

var framePool = sync.Pool{New: func() any { b := make([]byte, maxDataFrame); return &b }}

// maxWriteFrame bounds the frames kt sends. It is larger than the kubelet's: a mux frame
// (64 KiB and its header) then goes out as one data frame, not as two full ones and a
// 25-byte third, each of which every hop (API server, kubelet, runtime) handles on its own.
const maxWriteFrame = 64<<10 + 64

var writePool = sync.Pool{New: func() any { b := make([]byte, frameHeaderLen+maxWriteFrame); return &b }}

func newSession(conn net.Conn) (*session, error) {
	s := &session{
		conn:    conn,
		br:      bufio.NewReaderSize(conn, 16<<10),
		nextID:  1,
		streams: make(map[uint32]*spdyStream),
		done:    make(chan struct{}),
	}
	f, err := spdy.NewFramer(&s.wbuf, &s.feed)
	if err != nil {
		return nil, err
	}
	s.framer = f
	s.pingEvery, s.silent = pingPeriod, silentAfter
	s.heard.Store(time.Now().UnixNano())
	go s.readLoop()
	go s.ping()
	return s, nil
}

// feeder hands the framer the control frame that the read loop has just read.
type feeder struct{ b []byte }

func (f *feeder) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// alive reports whether the session can still open streams.
func (s *session) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Close ends the session and every stream on it.
func (s *session) Close() error {
	s.fail(errSessionClosed)
	return nil
}

func (s *session) fail(err error) {
	if err == io.EOF {
		err = errSessionClosed // a transfer cut short must not look complete
	}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	streams := s.streams
	s.streams = map[uint32]*spdyStream{}
	close(s.done)
	s.mu.Unlock()
	s.conn.Close()
	for _, st := range streams {
		st.remoteEnd(err)
	}
}

// open creates the error and data streams of one port-forward connection to port and
// waits for the kubelet's reply to the data stream. Both stream frames go out in one write;
// the error stream is half-closed from its first frame (nothing is ever written to it).
func (s *session) open(ctx context.Context, port uint16, requestID string) (stream, stream, error) {
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	h.Set(corev1.PortForwardRequestIDHeader, requestID)
	hd := h.Clone()
	hd.Set(corev1.StreamType, corev1.StreamTypeData)

	s.wmu.Lock()
	errs, data := s.newStream(s.nextID), s.newStream(s.nextID+2)
	errs.localFin = true
	s.nextID += 4
	if err := s.add(errs, data); err != nil {
		s.wmu.Unlock()
		return nil, nil, err
	}
	err := s.writeControlLocked(
		&spdy.SynStreamFrame{StreamId: spdy.StreamId(errs.id), Headers: h, CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin}},
		&spdy.SynStreamFrame{StreamId: spdy.StreamId(data.id), Headers: hd})
	s.wmu.Unlock()
	if err != nil {
		s.fail(err)
		return nil, nil, err
	}
	t := time.NewTimer(replyTimeout)
	defer t.Stop()
	select {
	case <-data.replied:
		if err := data.resetErr(); err != nil {
			s.remove(errs, data)
			return nil, nil, err
		}
		return data, errs, nil
	case <-s.done:
		return nil, nil, s.closedErr()
	case <-ctx.Done():
		data.Close()
		errs.Close()
		return nil, nil, ctx.Err()
	case <-t.C:
		data.Close()
		errs.Close()
		return nil, nil, fmt.Errorf("no reply to a new stream in %s", replyTimeout)
	}
}

func (s *session) newStream(id uint32) *spdyStream {
	return &spdyStream{s: s, id: id, replied: make(chan struct{}), readable: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func (s *session) add(sts ...*spdyStream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	for _, st := range sts {
		s.streams[st.id] = st
	}
	return nil
}

func (s *session) remove(sts ...*spdyStream) {
	s.mu.Lock()
	for _, st := range sts {
		if s.streams[st.id] == st {
			delete(s.streams, st.id)
		}
	}
	s.mu.Unlock()
}

func (s *session) stream(id uint32) *spdyStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

func (s *session) closedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// writeData sends p on stream id in frames of at most maxWriteFrame, each in one write.
func (s *session) writeData(id uint32, p []byte, fin bool) (int, error) {
	bp := writePool.Get().(*[]byte)
	defer writePool.Put(bp)
	buf := (*bp)[:cap(*bp)]
	n := 0
	for {
		chunk := min(len(p)-n, len(buf)-frameHeaderLen)
		last := n+chunk == len(p)
		var flags byte
		if last && fin {
			flags = byte(spdy.DataFlagFin)
		}
		putDataHeader(buf, id, flags, chunk)
		copy(buf[frameHeaderLen:], p[n:n+chunk])
		s.wmu.Lock()
		_, err := s.conn.Write(buf[:frameHeaderLen+chunk])
		s.wmu.Unlock()
		if err != nil {
			s.fail(err)
			return n, err
		}
		n += chunk
		if last {
			return n, nil
		}
	}
}

func putDataHeader(b []byte, id uint32, flags byte, n int) {
	binary.BigEndian.PutUint32(b, id&0x7fffffff)
	binary.BigEndian.PutUint32(b[4:], uint32(flags)<<24|uint32(n))
}

// writeControl sends one control frame.
func (s *session) writeControl(f spdy.Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeControlLocked(f)
}

// writeControlLocked sends control frames in one write; s.wmu is held.
func (s *session) writeControlLocked(fs ...spdy.Frame) error {
	s.wbuf.Reset()
	for _, f := range fs {
		if err := s.framer.WriteFrame(f); err != nil {
			return err
		}
	}
	_, err := s.conn.Write(s.wbuf.Bytes())
	return err
}

func (s *session) readLoop() {
	var hdr [frameHeaderLen]byte
	for {
		if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
			s.fail(err)
			return
		}
		s.heard.Store(time.Now().UnixNano())
		word := binary.BigEndian.Uint32(hdr[:])
		flagsLen := binary.BigEndian.Uint32(hdr[4:])
		n := int(flagsLen & 0xffffff)
		if word&0x80000000 != 0 {
			if err := s.readControl(hdr, n); err != nil {
				s.fail(err)
				return
			}
			continue
		}
		if err := s.readData(word&0x7fffffff, byte(flagsLen>>24), n); err != nil {
			s.fail(err)
			return
		}
	}
}

func (s *session) readData(id uint32, flags byte, n int) error {
	var bp *[]byte
	if n > 0 {
		if n <= maxDataFrame {
			bp = framePool.Get().(*[]byte)
			*bp = (*bp)[:n]
		} else {
			b := make([]byte, n)
			bp = &b
		}
		if _, err := io.ReadFull(s.br, *bp); err != nil {
			return err
		}
	}
	st := s.stream(id)
	if st == nil {
		putFrame(bp)
		return nil
	}
	st.deliver(bp, flags&byte(spdy.DataFlagFin) != 0)
	return nil
}

func putFrame(bp *[]byte) {
	if bp != nil && cap(*bp) == maxDataFrame {
		framePool.Put(bp)
	}
}

// maxControlFrame bounds a control frame's payload: the API server's are a few dozen bytes.
const maxControlFrame = 64 << 10

// readControl reads one control frame and acts on it. It parses the few fields kt needs by
// itself, never through spdystream's reader: that trusts counts in the frame (a 12-byte
// SETTINGS frame claiming 0x7fffffff entries made it allocate 24 GiB, and a header block's
// counts and lengths are as unchecked). A SYN_REPLY's headers are not needed, so they are not
// decompressed.
func (s *session) readControl(hdr [frameHeaderLen]byte, n int) error {
	if n > maxControlFrame {
		return fmt.Errorf("SPDY control frame of %d bytes, more than %d", n, maxControlFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.br, b); err != nil {
		return err
	}
	typ, flags := binary.BigEndian.Uint16(hdr[2:4]), hdr[4]
	u32 := func(off int) (uint32, error) {
		if len(b) < off+4 {
			return 0, fmt.Errorf("SPDY control frame of type %d: %d bytes, too short", typ, len(b))
		}
		return binary.BigEndian.Uint32(b[off:]), nil
	}
	switch spdy.ControlFrameType(typ) {
	case spdy.TypeSynReply:
		id, err := u32(0)
		if err != nil {
			return err
		}
		if st := s.stream(id & 0x7fffffff); st != nil {
			st.reply(spdy.ControlFlags(flags)&spdy.ControlFlagFin != 0)
		}
	case spdy.TypeRstStream:
		id, err := u32(0)
		if err != nil {
			return err
		}
		if st := s.stream(id & 0x7fffffff); st != nil {
			s.remove(st)
			st.remoteEnd(io.EOF) // as spdystream: the error stream says why, if anything went wrong
		}
	case spdy.TypePing:
		id, err := u32(0)
		if err != nil {
			return err
		}
		if id%2 == 0 { // the server's: echo it (ours are odd, and their echo needs nothing)
			go s.writeControl(&spdy.PingFrame{Id: id}) //nolint:errcheck // a failed write ends the session via the read side
		}
	case spdy.TypeGoAway:
		return errSessionClosed
	}
	return nil // SETTINGS, WINDOW_UPDATE, HEADERS, a server's SYN_STREAM: nothing to do
}

func (s *session) ping() {
	t := time.NewTicker(s.pingEvery)
	defer t.Stop()
	for id := uint32(1); ; id += 2 {
		select {
		case <-s.done:
			return
		case <-t.C:
			if !s.stalled.Load() && time.Since(time.Unix(0, s.heard.Load())) > s.silent {
				s.fail(errSilent)
				return
			}
			if err := s.writeControl(&spdy.PingFrame{Id: id}); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

// spdyStream is one SPDY stream. Received frames wait in q for the reader; the read loop
// waits when more than streamBuffer bytes wait.
type spdyStream struct {
	s       *session
	id      uint32
	replied chan struct{}

	mu        sync.Mutex
	q         []*[]byte // received frames; the first is read from off
	off       int
	queued    int
	remoteFin bool
	reset     bool  // reset by the peer, or the session ended (err says which)
	closed    bool  // closed here: what arrives is dropped
	localFin  bool  // FIN sent
	err       error // what Read returns once the queue is empty after a reset
	gotReply  bool

	readable chan struct{} // a frame or the end arrived
	space    chan struct{} // the reader took data
}

func (st *spdyStream) reply(fin bool) {
	st.mu.Lock()
	if !st.gotReply {
		st.gotReply = true
		close(st.replied)
	}
	if fin {
		st.remoteFin = true
		signal(st.readable)
	}
	st.mu.Unlock()
}

// resetErr says why a stream was reset before it could be used, or nil.
func (st *spdyStream) resetErr() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case !st.reset:
		return nil
	case st.err == io.EOF:
		return errStreamReset
	default:
		return st.err
	}
}

func (st *spdyStream) remoteEnd(err error) {
	st.mu.Lock()
	st.reset, st.err = true, err
	if !st.gotReply {
		st.gotReply = true
		close(st.replied)
	}
	st.mu.Unlock()
	signal(st.readable)
	signal(st.space)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// deliver queues a received frame (bp may be nil: an empty frame that carries FIN) and
// waits while the reader is more than streamBuffer behind.
func (st *spdyStream) deliver(bp *[]byte, fin bool) {
	st.mu.Lock()
	if st.closed || st.reset {
		st.mu.Unlock()
		putFrame(bp)
		return
	}
	if bp != nil {
		st.q = append(st.q, bp)
		st.queued += len(*bp)
	}
	if fin {
		st.remoteFin = true
	}
	signal(st.readable)
	if st.queued > streamBuffer {
		// Silence from the network while the read loop waits here is not the network's:
		// a developer paused in a debugger must not cost every flow its tunnel.
		st.s.stalled.Store(true)
		defer func() {
			st.s.heard.Store(time.Now().UnixNano())
			st.s.stalled.Store(false)
		}()
	}
	for st.queued > streamBuffer && !st.closed && !st.reset {
		st.mu.Unlock()
		select {
		case <-st.space:
		case <-st.s.done:
			return
		}
		st.mu.Lock()
	}
	st.mu.Unlock()
}

// wait blocks until there is data or the stream ended; it returns with st.mu held.
func (st *spdyStream) wait() error {
	st.mu.Lock()
	for len(st.q) == 0 {
		switch {
		case st.closed:
			st.mu.Unlock()
			return net.ErrClosed
		case st.remoteFin:
			st.mu.Unlock()
			return io.EOF
		case st.reset:
			err := st.err
			st.mu.Unlock()
			return err
		}
		st.mu.Unlock()
		<-st.readable
		st.mu.Lock()
	}
	return nil
}

// consume marks n more bytes of the first queued frame read. Once the frame is read to its
// end it leaves the queue and is returned, for the caller to put back in the pool.
func (st *spdyStream) consume(n int) (done *[]byte) {
	st.off += n
	st.queued -= n
	if bp := st.q[0]; st.off == len(*bp) {
		st.q[0] = nil
		st.q = st.q[1:]
		st.off = 0
		return bp
	}
	return nil
}

func (st *spdyStream) Read(p []byte) (int, error) {
	if err := st.wait(); err != nil {
		return 0, err
	}
	n := copy(p, (*st.q[0])[st.off:])
	putFrame(st.consume(n))
	st.mu.Unlock()
	signal(st.space)
	return n, nil
}

// WriteTo hands each received frame to w as it is, without copying it into a read buffer.
func (st *spdyStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if err := st.wait(); err != nil {
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		b := (*st.q[0])[st.off:]
		bp := st.consume(len(b))
		st.mu.Unlock()
		signal(st.space)
		n, err := w.Write(b)
		putFrame(bp)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

func (st *spdyStream) Write(p []byte) (int, error) {
	st.mu.Lock()
	bad := st.closed || st.localFin || st.reset
	st.mu.Unlock()
	if bad {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	return st.s.writeData(st.id, p, false)
}

// CloseWrite sends FIN.
func (st *spdyStream) CloseWrite() error {
	st.mu.Lock()
	if st.closed || st.localFin || st.reset {
		st.mu.Unlock()
		return nil
	}
	st.localFin = true
	st.mu.Unlock()
	_, err := st.s.writeData(st.id, nil, true)
	return err
}

// Close drops what was received and not read, and resets the stream unless both sides
// have already finished it.
func (st *spdyStream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	for _, bp := range st.q {
		putFrame(bp)
	}
	st.q, st.queued = nil, 0
	done := st.reset || (st.localFin && st.remoteFin)
	st.mu.Unlock()
	signal(st.readable)
	signal(st.space)
	st.s.remove(st)
	if done {
		return nil
	}
	return st.s.writeControl(&spdy.RstStreamFrame{StreamId: spdy.StreamId(st.id), Status: spdy.Cancel})
}
