package udprelay

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func udpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func relay(t *testing.T) (net.Conn, chan error) {
	t.Helper()
	client, agent := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(agent) }()
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(5 * time.Second))
	return client, done
}

func TestRelayDatagrams(t *testing.T) {
	echo := udpEcho(t)
	c, done := relay(t)
	c.Write(wire.RelayMagic[:])
	for _, msg := range []string{"one", "two", strings.Repeat("x", 9000)} {
		b, _ := wire.AppendFrame(nil, wire.Frame{Type: wire.FrameDatagram, Addr: echo, Payload: []byte(msg)})
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		f, err := wire.ReadFrame(c, nil)
		if err != nil {
			t.Fatalf("read reply: %v", err)
		}
		if f.Type != wire.FrameDatagram || f.Addr != echo || string(f.Payload) != "echo:"+msg {
			t.Errorf("reply type %d from %v: %.40q", f.Type, f.Addr, f.Payload)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after client close: %v", err)
	}
}

func TestRelayRejectsBadInput(t *testing.T) {
	for name, send := range map[string][]byte{
		"wrong magic":     []byte("GET / HTTP/1.1\r\n"),
		"malformed frame": append(wire.RelayMagic[:], 0, 2, 1, 4),
		"error frame":     append(wire.RelayMagic[:], 0, 4, wire.FrameError, 0, 0, 0),
	} {
		t.Run(name, func(t *testing.T) {
			c, done := relay(t)
			go c.Write(send)
			f, err := wire.ReadFrame(c, nil)
			if err != nil {
				t.Fatalf("want an error frame, got %v", err)
			}
			if f.Type != wire.FrameError || len(f.Payload) == 0 {
				t.Errorf("want an error frame with a message, got type %d %q", f.Type, f.Payload)
			}
			if err := <-done; err == nil {
				t.Error("Serve returned no error")
			}
		})
	}
}
