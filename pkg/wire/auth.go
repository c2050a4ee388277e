package wire

// Every agent port but SSH and health authenticates each stream: a port-forward to the pod
// is open to anyone with pods/portforward in the namespace, where only SSH checks a key. The
// agent makes a random secret when it starts and tells it to a client that has logged in over
// SSH (global request SecretRequest, the reply's payload); every other stream then starts with
// AuthMagic and the secret, which the agent checks before it reads anything else.

import (
	"crypto/subtle"
	"errors"
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

// ReadAuth reads a stream's opening and checks it against secret in constant time.
func ReadAuth(r io.Reader, secret []byte) error {
	var b [len(AuthMagic) + SecretLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ErrBadAuth
	}
	ok := subtle.ConstantTimeCompare(b[:len(AuthMagic)], AuthMagic[:]) & subtle.ConstantTimeCompare(b[len(AuthMagic):], secret)
	if len(secret) != SecretLen || ok != 1 {
		return ErrBadAuth
	}
	return nil
}
