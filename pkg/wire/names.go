package wire

import (
	"crypto/rand"
	"os"
	"os/user"
)

// NewSession returns a random session id: 6 characters of [a-z0-9].
func NewSession() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Owner returns user@host of this process, for the owner annotation.
func Owner() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if su := os.Getenv("SUDO_USER"); su != "" {
		name = su
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// ShadowName is the pod name for a role and session.
func ShadowName(role, session string) string { return "kt-" + role + "-" + session }
