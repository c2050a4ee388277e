// Package udprelay carries UDP datagrams between a stream (a port-forward connection from the
// client) and the cluster network, with the framing described in pkg/wire.
package udprelay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// IdleTimeout closes a stream that carried no datagram either way for this long.
const IdleTimeout = 2 * time.Minute

// Serve relays one stream until it ends or goes idle. Each stream has its own UDP socket.
func Serve(stream net.Conn) error {
	defer stream.Close()
	var magic [4]byte
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(stream, magic[:]); err != nil {
		return fmt.Errorf("read relay header: %w", err)
	}
	stream.SetReadDeadline(time.Time{})
	w := &frameWriter{w: stream}
	if magic != wire.RelayMagic {
		err := fmt.Errorf("not a kt UDP relay stream (header %q); client and agent versions differ?", magic[:])
		w.writeError(err)
		return err
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		w.writeError(err)
		return err
	}
	defer pc.Close()

	idle := newIdleWatch(stream)
	defer idle.stop()
	go func() { // replies from the cluster to the client
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			idle.touch()
			if err := w.write(wire.Frame{Type: wire.FrameDatagram, Addr: from, Payload: buf[:n]}); err != nil {
				stream.Close()
				return
			}
		}
	}()
	buf := make([]byte, 65535)
	for {
		f, err := wire.ReadFrame(stream, buf)
		if err != nil {
			if errors.Is(err, wire.ErrBadFrame) {
				w.writeError(err)
				return err
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if f.Type != wire.FrameDatagram {
			err := fmt.Errorf("%w: the client may send datagrams only", wire.ErrBadFrame)
			w.writeError(err)
			return err
		}
		idle.touch()
		dst := netip.AddrPortFrom(f.Addr.Addr().Unmap(), f.Addr.Port())
		if _, err := pc.WriteToUDPAddrPort(f.Payload, dst); err != nil {
			klog.Background().V(4).Info("udp relay: send", "dst", dst, "err", err)
		}
	}
}

// idleWatch closes a stream that has carried no datagram either way for IdleTimeout.
type idleWatch struct {
	mu   sync.Mutex
	last time.Time
	done chan struct{}
}

func newIdleWatch(stream net.Conn) *idleWatch {
	iw := &idleWatch{last: time.Now(), done: make(chan struct{})}
	go func() {
		t := time.NewTicker(IdleTimeout / 4)
		defer t.Stop()
		for {
			select {
			case <-iw.done:
				return
			case <-t.C:
				iw.mu.Lock()
				idle := time.Since(iw.last)
				iw.mu.Unlock()
				if idle > IdleTimeout {
					stream.Close()
					return
				}
			}
		}
	}()
	return iw
}

func (iw *idleWatch) touch() { iw.mu.Lock(); iw.last = time.Now(); iw.mu.Unlock() }
func (iw *idleWatch) stop()  { close(iw.done) }

type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

func (fw *frameWriter) write(f wire.Frame) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	b, err := wire.AppendFrame(fw.buf.AvailableBuffer(), f)
	if err != nil {
		return err
	}
	_, err = fw.w.Write(b)
	return err
}

func (fw *frameWriter) writeError(err error) {
	fw.write(wire.Frame{Type: wire.FrameError, Payload: []byte(err.Error())})
}
