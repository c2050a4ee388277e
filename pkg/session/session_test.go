package session

import (
	"bytes"
	"testing"
	"time"
)

// An SSH login takes seven round trips and runs in the background after "Connected"; the
// streams that open meanwhile (the first DNS lookup, the first TCP flow) must not wait for it.
// They did while SSH held the lock that guards the secrets: the first lookup through the
// tunnel took 10.5 round trips over a 40 ms link instead of 1 (make bench-wan).
func TestStreamsDoNotWaitForALoginOnItsWay(t *testing.T) {
	own := bytes.Repeat([]byte{7}, 32)
	s := &Session{own: own}
	s.sshMu.Lock() // a login on its way
	defer s.sshMu.Unlock()
	got := make(chan []byte, 1)
	go func() { got <- s.streamSecret() }()
	select {
	case b := <-got:
		if !bytes.Equal(b, own) {
			t.Fatalf("secret %x, want the client's own", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stream's secret waited for the SSH login")
	}
	agents := &Session{secret: []byte("told over ssh")}
	if b := agents.streamSecret(); string(b) != "told over ssh" {
		t.Fatalf("without a secret of its own: %q, want the agent's", b)
	}
}
