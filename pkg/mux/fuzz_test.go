package mux

import (
	"io"
	"net"
	"testing"
	"time"
)

// Whatever bytes a peer sends, a session fails or serves; it never panics, and a stream holds
// no more than its window.
func FuzzSession(f *testing.F) {
	hdr := func(typ byte, id, n uint32) []byte {
		return []byte{typ, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	f.Add(append(append(hdr(frameOpen, 1, 0), hdr(frameData, 1, 3)...), 'a', 'b', 'c'))
	f.Add(append(hdr(frameOpen, 1, 0), hdr(frameData, 1, 0)...))
	f.Add(append(hdr(frameOpen, 1, 0), hdr(frameMove, 1, 1)...))
	f.Add(hdr(frameWindow, 7, 1<<31))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		s := Server(b)
		defer s.Close()
		go func() {
			for {
				st, err := s.Accept()
				if err != nil {
					return
				}
				go func() {
					io.Copy(io.Discard, st)
					st.Close()
				}()
			}
		}()
		go io.Copy(io.Discard, a)
		a.SetWriteDeadline(time.Now().Add(time.Second))
		a.Write(data)
		a.Close()
		select {
		case <-s.Done():
		case <-time.After(2 * time.Second):
			t.Fatal("the session did not end with its connection")
		}
	})
}
