package wire

// Every agent port but SSH and health authenticates each stream: a port-forward to the pod
// is open to anyone with pods/portforward in the namespace, where only SSH checks a key. The
// agent makes a random secret when it starts and tells it to a client that has logged in over
// SSH (global request SecretRequest, the reply's payload); every other stream then starts with
// AuthMagic and the secret, which the agent checks before it reads anything else.
//
// A client that made the pod can skip SSH before its first stream: it makes a secret of its
// own and passes the pod only its SHA-256 (EnvSecretDigest, which anyone who may read the pod
// sees), and opens streams with the secret itself. The digest opens nothing.

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// SecretRequest is the SSH global request whose reply carries the agent's stream secret.
const SecretRequest = "kt-stream-secret@" + Domain

// SecretLen is the length of the agent's stream secret.
const SecretLen = 32

// AuthMagic opens every authenticated stream, before the secret.
var AuthMagic = [4]byte{'K', 'T', 'A', 1}

// ErrBadAuth is a stream that did not open with the agent's secret.
var ErrBadAuth = errors.New("stream did not authenticate")

// Authenticated reports whether streams to port must start with the secret.
func Authenticated(port int) bool {
	switch port {
	case MuxPort, MovePort, DNSPort, UDPRelayPort, ReversePort:
		return true
	}
	return false
}

// AppendAuth appends the opening of an authenticated stream.
func AppendAuth(b []byte, secret []byte) []byte {
	return append(append(b, AuthMagic[:]...), secret...)
}

// ReadAuth reads a stream's opening and checks it, in constant time, against secret or, when
// digest is set, against the secret whose SHA-256 digest is.
func ReadAuth(r io.Reader, secret, digest []byte) error {
	var b [len(AuthMagic) + SecretLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ErrBadAuth
	}
	magic := subtle.ConstantTimeCompare(b[:len(AuthMagic)], AuthMagic[:])
	ok := subtle.ConstantTimeCompare(b[len(AuthMagic):], secret) & magic
	if len(secret) != SecretLen {
		ok = 0
	}
	if len(digest) == sha256.Size {
		sum := sha256.Sum256(b[len(AuthMagic):])
		ok |= subtle.ConstantTimeCompare(sum[:], digest) & magic
	}
	if ok != 1 {
		return ErrBadAuth
	}
	return nil
}

// SecretDigest is the value of EnvSecretDigest for a client's secret.
func SecretDigest(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// ParseSecretDigest reads EnvSecretDigest: empty, or the hex SHA-256 of a secret.
func ParseSecretDigest(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("want %d hex digits (a SHA-256), got %d characters", 2*sha256.Size, len(s))
	}
	return b, nil
}
