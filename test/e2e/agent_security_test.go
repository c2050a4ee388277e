//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// TestAgentExpires: once its client is gone (the tunnel closed without teardown, as after a
// crash), the agent exits by itself after --shadow-expire-after.
func TestAgentExpires(t *testing.T) {
	nothingLeftBehind(t)
	ctx := context.Background()
	opts := cluster.NewPodOptions()
	opts.Image = envOr("KT_IMAGE", opts.Image)
	opts.ExpireAfter = 10 * time.Second
	s, err := session.Start(ctx, restConfig, client, session.Options{Namespace: testNamespace, Role: wire.RoleConnect, Pod: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ssh, _ := s.SSH(ctx)
	ssh.Close()
	s.Dialer.Close() // the client vanishes; the pod is not deleted
	t0 := time.Now()
	eventually(t, 40*time.Second, "agent exits after its client is gone", func() error {
		p, err := client.CoreV1().Pods(testNamespace).Get(ctx, s.Pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	if d := time.Since(t0); d < 9*time.Second {
		t.Errorf("agent exited after %s, before its 10s expiry", d)
	}
}

// TestAgentRestrictedNamespace: the shadow runs in a namespace that enforces Pod Security
// "restricted", and, as a non-root process without capabilities, still listens on port 80.
func TestAgentRestrictedNamespace(t *testing.T) {
	nothingLeftBehind(t)
	ctx := context.Background()
	ns := "kt-e2e-restricted"
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	// prove enforcement is on: a root pod is refused
	_, err = client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "root"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: testapp, Args: []string{"sleep"}}}}}, metav1.CreateOptions{DryRun: []string{"All"}})
	if err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Fatalf("namespace %s does not enforce restricted: %v", ns, err)
	}
	opts := cluster.NewPodOptions()
	opts.Image = envOr("KT_IMAGE", opts.Image)
	s, err := session.Start(ctx, restConfig, client, session.Options{Namespace: ns, Role: wire.RoleExchange, Pod: opts, ForwardPorts: []corev1.ContainerPort{{ContainerPort: 80}}, Protocol: portforward.ProtocolAuto})
	if err != nil {
		t.Fatalf("shadow refused in a restricted namespace: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	sc, err := s.SSH(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sc.Listen(80)
	if err != nil {
		t.Fatalf("listen on port 80 as non-root: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "port 80 on the laptop") })}
	go srv.Serve(l)
	defer srv.Close()
	r := inCluster(t, fmt.Sprintf("timeout 10 wget -qO- http://%s/", s.Pod.Status.PodIP))
	if !strings.Contains(r.Stdout, "port 80 on the laptop") {
		t.Errorf("request to port 80 of the shadow:\n%s", r)
	}
}
