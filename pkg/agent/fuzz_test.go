package agent

import (
	"bytes"
	"net"
	"testing"
)

// The first bytes of a mux stream come from whoever holds the session: readConnect must
// never panic or read past what it is given, and what it accepts is a host:port.
func FuzzReadConnect(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 10, 96, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 3, 'w', 'e', 'b', 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187})
	f.Add([]byte{5, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		addr, _, err := readConnect(bytes.NewReader(data))
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			t.Errorf("accepted %q: %v", addr, err)
		}
	})
}
