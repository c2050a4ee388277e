package wire

import (
	"bytes"
	"testing"
)

// A stream's opening to an authenticating port: only AuthMagic and the exact secret, or the
// client's secret whose digest the pod has, pass; the digest itself does not.
func FuzzReadAuth(f *testing.F) {
	secret := bytes.Repeat([]byte{7}, SecretLen)
	own := bytes.Repeat([]byte{9}, SecretLen)
	digest, err := ParseSecretDigest(SecretDigest(own))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(AppendAuth(nil, secret))
	f.Add(AppendAuth(nil, own))
	f.Add(AppendAuth(nil, digest))
	f.Add(AppendAuth(nil, make([]byte, SecretLen)))
	f.Add([]byte("KTRV\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ReadAuth(bytes.NewReader(data), secret, digest)
		want := bytes.HasPrefix(data, AppendAuth(nil, secret)) || bytes.HasPrefix(data, AppendAuth(nil, own))
		if (err == nil) != want {
			t.Errorf("ReadAuth(%x) = %v", data, err)
		}
		if err := ReadAuth(bytes.NewReader(data), secret, nil); (err == nil) != bytes.HasPrefix(data, AppendAuth(nil, secret)) {
			t.Errorf("without a digest, ReadAuth(%x) = %v", data, err)
		}
	})
}

func TestSecretDigest(t *testing.T) {
	own := bytes.Repeat([]byte{9}, SecretLen)
	if err := ReadAuth(bytes.NewReader(AppendAuth(nil, own)), nil, mustDigest(t, SecretDigest(own))); err != nil {
		t.Errorf("the client's own secret, with no agent secret yet: %v", err)
	}
	for _, bad := range []string{"zz", "abcd", SecretDigest(own) + "00"} {
		if _, err := ParseSecretDigest(bad); err == nil {
			t.Errorf("ParseSecretDigest(%q) accepted", bad)
		}
	}
	if d, err := ParseSecretDigest(""); d != nil || err != nil {
		t.Errorf("empty: %v %v", d, err)
	}
}

func mustDigest(t *testing.T, s string) []byte {
	d, err := ParseSecretDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
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
