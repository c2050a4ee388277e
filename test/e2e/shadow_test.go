//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// startSession starts a shadow in the test namespace through the project's own code.
func startSession(t *testing.T, proto portforward.Protocol, role string) *session.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts := cluster.NewPodOptions()
	if img := os.Getenv("KT_IMAGE"); img != "" {
		opts.Image = img
	}
	s, err := session.Start(ctx, restConfig, client, session.Options{
		Namespace: testNamespace, Role: role, Command: "e2e " + t.Name(), Pod: opts, Protocol: proto,
	})
	if err != nil {
		t.Fatalf("start shadow: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close session: %v", err)
		}
	})
	return s
}

// readyz fetches the agent's readiness endpoint through the port-forward.
func readyz(t *testing.T, s *session.Session) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := s.Dial(ctx, wire.HealthPort)
	if err != nil {
		t.Fatalf("dial health port: %v", err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("GET", "http://shadow/readyz", nil)
	req.Header.Set("Connection", "close")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("read /readyz: %v", err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decode /readyz: %v", err)
	}
	return st
}

// TestShadowThroughPortForward creates a shadow from the locally built image, reaches it
// through the project's port-forward dialer over WebSocket and over SPDY, and deletes it.
func TestShadowThroughPortForward(t *testing.T) {
	for _, proto := range []portforward.Protocol{portforward.ProtocolWebSocket, portforward.ProtocolSPDY, portforward.ProtocolAuto} {
		name := string(proto)
		if name == "" {
			name = "auto"
		}
		t.Run(name, func(t *testing.T) {
			nothingLeftBehind(t)
			s := startSession(t, proto, wire.RoleConnect)
			want := string(proto)
			if proto == portforward.ProtocolAuto {
				want = string(portforward.ProtocolSPDY) // this API server takes it
			}
			if got := s.Dialer.Tunnel(); got != want {
				t.Errorf("tunnel protocol %q, want %q", got, want)
			}
			st := readyz(t, s)
			if st["ready"] != true || st["protocolVersion"] != float64(wire.ProtocolVersion) {
				t.Errorf("readyz = %v", st)
			}
			if c, _ := st["clients"].(float64); c < 1 {
				t.Errorf("agent counts %v clients, want at least the SSH control connection", st["clients"])
			}
			pod, err := client.CoreV1().Pods(testNamespace).Get(context.Background(), s.Pod.Name, metavGet)
			if err != nil {
				t.Fatal(err)
			}
			if pod.Labels[wire.ManagedByLabel] != wire.ManagedBy || pod.Annotations[wire.OwnerAnnotation] == "" {
				t.Errorf("shadow pod lacks kt's labels and annotations: %v %v", pod.Labels, pod.Annotations)
			}
		})
	}
}
