package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Type: FrameDatagram, Addr: netip.MustParseAddrPort("10.96.0.10:53"), Payload: []byte("query")},
		{Type: FrameDatagram, Addr: netip.MustParseAddrPort("[fd00::1]:9090"), Payload: nil},
		{Type: FrameDatagram, Addr: netip.MustParseAddrPort("1.2.3.4:1"), Payload: bytes.Repeat([]byte{7}, MaxDatagram)},
		{Type: FrameError, Payload: []byte("bad frame")},
	} {
		b, err := AppendFrame(nil, f)
		if err != nil {
			t.Fatalf("AppendFrame(%v): %v", f.Addr, err)
		}
		got, err := ReadFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatalf("ReadFrame: %v", err)
		}
		if len(f.Payload) == 0 {
			f.Payload = []byte{}
		}
		if diff := cmp.Diff(f.Payload, got.Payload); diff != "" || got.Type != f.Type || got.Addr != f.Addr {
			t.Errorf("round trip of %v: got type %d addr %v, payload diff %s", f.Addr, got.Type, got.Addr, diff)
		}
	}
}

func TestAppendFrameRejects(t *testing.T) {
	if _, err := AppendFrame(nil, Frame{Type: FrameDatagram}); !errors.Is(err, ErrBadFrame) {
		t.Errorf("datagram without address: err %v", err)
	}
	big := Frame{Type: FrameDatagram, Addr: netip.MustParseAddrPort("1.2.3.4:1"), Payload: make([]byte, MaxDatagram+1)}
	if _, err := AppendFrame(nil, big); !errors.Is(err, ErrBadFrame) {
		t.Errorf("oversized datagram: err %v", err)
	}
}

func TestReadFrameMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"short length":    {0, 2, 1, 4},
		"bad addr length": {0, 8, FrameDatagram, 5, 1, 2, 3, 4, 5, 0},
		"addr overruns":   {0, 5, FrameDatagram, 16, 1, 2, 3},
		"unknown type":    {0, 4, 9, 0, 0, 0},
		"no address":      {0, 4, FrameDatagram, 0, 0, 53},
		"truncated":       {0, 20, FrameDatagram, 4, 1},
	} {
		if _, err := ReadFrame(bytes.NewReader(b), nil); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: err = %v, want ErrBadFrame", name, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	b, _ := AppendFrame(nil, Frame{Type: FrameDatagram, Addr: netip.MustParseAddrPort("10.0.0.1:53"), Payload: []byte("x")})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bytes.NewReader(data), nil)
		if err != nil {
			return
		}
		if _, err := AppendFrame(nil, fr); err != nil && fr.Type == FrameDatagram {
			t.Errorf("a frame that reads cannot be written again: %v", err)
		}
	})
}
