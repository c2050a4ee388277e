package wire

import (
	"bytes"
	"testing"
)

// A stream's opening to an authenticating port: only AuthMagic and the exact secret pass.
func FuzzReadAuth(f *testing.F) {
	secret := bytes.Repeat([]byte{7}, SecretLen)
	f.Add(AppendAuth(nil, secret))
	f.Add(AppendAuth(nil, make([]byte, SecretLen)))
	f.Add([]byte("KTRV\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ReadAuth(bytes.NewReader(data), secret)
		want := bytes.HasPrefix(data, AppendAuth(nil, secret))
		if (err == nil) != want {
			t.Errorf("ReadAuth(%x) = %v", data, err)
		}
	})
}

// The first frames of reverse and move streams (read after authentication).
func FuzzReadHellos(f *testing.F) {
	var b bytes.Buffer
	WriteReverseHello(&b, 3)
	f.Add(b.Bytes())
	f.Add(MoveRequest{Stream: 9}.Append(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		ReadReverseHello(bytes.NewReader(data))
		ReadReverseGo(bytes.NewReader(data))
		if r, err := ReadMoveRequest(bytes.NewReader(data)); err == nil && !bytes.HasPrefix(data, r.Append(nil)) {
			t.Errorf("move request %+v does not encode back to %x", r, data)
		}
	})
}
