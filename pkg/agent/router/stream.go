package router

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// A stream copy (a WebSocket after its upgrade, a TCP connection that is not HTTP) is the
// client's bytes on a connection of its own to the mirror's shadow; what the shadow sends back
// is read and dropped. Feeding it never blocks the original: a backlog over maxBacklog (the
// laptop does not keep up) cuts the copy, and a cut or undelivered copy counts as dropped.
const (
	maxBacklog = 1 << 20
	maxStreams = 64 // open stream copies per mirror
)

type streamTap struct {
	mu                   sync.Mutex
	buf                  bytes.Buffer
	closed, cut, drained bool
	wake                 chan struct{}
	done                 chan struct{} // closed by Close, when set
}

// Write keeps p for the copy; it never fails and never waits.
func (s *streamTap) Write(p []byte) (int, error) {
	s.mu.Lock()
	if !s.closed && !s.cut {
		if s.buf.Len()+len(p) > maxBacklog {
			s.cut = true
			s.buf.Reset()
		} else {
			s.buf.Write(p)
		}
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Close ends the copy once what is kept has gone out.
func (s *streamTap) Close() {
	s.mu.Lock()
	if !s.closed && s.done != nil {
		close(s.done)
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *streamTap) fail() { s.mu.Lock(); s.cut = true; s.buf.Reset(); s.mu.Unlock() }

// delivered tells whether everything the client sent went out, to its end.
func (s *streamTap) delivered() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.drained && !s.cut }

func (s *streamTap) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		switch {
		case s.cut:
			s.mu.Unlock()
			return 0, errCut
		case s.buf.Len() > 0:
			n, _ := s.buf.Read(p)
			s.mu.Unlock()
			return n, nil
		case s.closed:
			s.drained = true
			s.mu.Unlock()
			return 0, io.EOF
		}
		s.mu.Unlock()
		<-s.wake
	}
}

var errCut = io.ErrShortWrite

// startStream opens a stream copy that begins with head, or returns nil (and counts a drop)
// when the mirror has maxStreams open already.
func (mr *mirror) startStream(port int, head []byte) *streamTap {
	if mr.streams.Add(1) > maxStreams {
		mr.streams.Add(-1)
		mr.dropped.Add(1)
		return nil
	}
	s := &streamTap{wake: make(chan struct{}, 1)}
	go func() {
		defer mr.streams.Add(-1)
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(*mr.shadow.Load(), strconv.Itoa(port)), mr.timeout)
		if err != nil {
			s.fail()
			mr.dropped.Add(1)
			return
		}
		defer conn.Close()
		go io.Copy(io.Discard, conn)
		if len(head) > 0 {
			conn.SetWriteDeadline(time.Now().Add(mirrorTimeout))
			if _, err := conn.Write(head); err != nil {
				s.fail()
				mr.dropped.Add(1)
				return
			}
			conn.SetWriteDeadline(time.Time{})
		}
		if _, err := io.Copy(conn, s); err != nil {
			s.fail()
			mr.dropped.Add(1)
			return
		}
		closeWrite(conn)
		mr.sent.Add(1)
		time.Sleep(100 * time.Millisecond) // the shadow's answer, if any, is dropped
	}()
	return s
}

// taps feeds several stream copies.
type taps []*streamTap

func (ts taps) Write(p []byte) (int, error) {
	for _, t := range ts {
		t.Write(p)
	}
	return len(p), nil
}

func (ts taps) Close() {
	for _, t := range ts {
		t.Close()
	}
}

// startStreams opens a stream copy for each mirror that takes one.
func startStreams(mirrors []*mirror, port int, head []byte) taps {
	var ts taps
	for _, mr := range mirrors {
		if t := mr.startStream(port, head); t != nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// teeConn is a client connection whose bytes read are also fed to taps.
type teeConn struct {
	net.Conn
	taps taps
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.taps.Write(p[:n])
	return n, err
}

func (c *teeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
