package sshtunnel

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func serveLines(t *testing.T, s string) net.Conn {
	c, srv := net.Pipe()
	go func() { srv.Write([]byte(s)); time.Sleep(time.Second); srv.Close() }()
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReadVersion(t *testing.T) {
	ours := fmt.Sprintf("%s_%d", wire.SSHServerVersion, wire.ProtocolVersion)
	v, err := ReadVersion(context.Background(), serveLines(t, "a banner\r\n"+ours+"\r\nrest of the handshake"))
	if err != nil || v != ours {
		t.Fatalf("got %q, %v", v, err)
	}
	if err := CheckVersion(v); err != nil {
		t.Errorf("our own version: %v", err)
	}
	if err := CheckVersion(wire.SSHServerVersion + "_1"); err == nil || !strings.Contains(err.Error(), "leave --image out") {
		t.Errorf("an older agent: %v", err)
	}
	if err := CheckVersion("SSH-2.0-OpenSSH_9.6"); err == nil || !strings.Contains(err.Error(), "does not run a kt shadow") {
		t.Errorf("another SSH server: %v", err)
	}
	if _, err := ReadVersion(context.Background(), serveLines(t, strings.Repeat("x", 300)+"\r\n")); err == nil {
		t.Error("a line longer than 255 bytes was taken")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ReadVersion(ctx, serveLines(t, "")); err == nil {
		t.Error("a silent server gave a version")
	}
}
