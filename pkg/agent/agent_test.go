package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

func TestRunExpiresWithoutClient(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := gossh.NewPublicKey(pub)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch ns.svc.cluster.local\noptions ndots:5\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	err := Run(ctx, Config{AuthorizedKey: string(gossh.MarshalAuthorizedKey(sp)), ListenIP: "127.0.0.3", PodIP: "127.0.0.3",
		ExpireAfter: 1500 * time.Millisecond, ResolvConf: rc})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(t0); d < 1500*time.Millisecond || d > 5*time.Second {
		t.Errorf("expired after %s, want about 1.5s", d)
	}
}

func TestRunRejectsBadKey(t *testing.T) {
	err := Run(context.Background(), Config{AuthorizedKey: "not a key", ListenIP: "127.0.0.4"})
	if err == nil {
		t.Fatal("Run accepted a malformed key")
	}
}

func TestSharedKeySetCountsOthersOnLeave(t *testing.T) {
	gen := func() gossh.PublicKey {
		pub, _, _ := ed25519.GenerateKey(nil)
		k, _ := gossh.NewPublicKey(pub)
		return k
	}
	a, b := gen(), gen()
	s := newKeySet()
	s.add(b)
	if !s.has(b) || s.has(a) {
		t.Fatal("has: want only the added key")
	}
	doneA := s.connected(a)
	doneB := s.connected(b)
	if n := s.leave(a); n != 1 {
		t.Errorf("a leaves while b is connected: others = %d, want 1", n)
	}
	doneB()
	if n := s.leave(a); n != 0 {
		t.Errorf("a leaves, b gone: others = %d, want 0", n)
	}
	doneA()
	s.connected(a) // a returns (a reconnecting client): no longer counted as gone
	if n := s.leave(b); n != 1 {
		t.Errorf("b leaves while a is back: others = %d, want 1", n)
	}
}
