// Package sessiontest has fake sessions for unit tests of exchange, mesh and preview: their
// shadow pods are real specs created in a fake cluster (pkg/cluster/clustertest), and their
// forwards "listen" at once; nothing is tunnelled.
package sessiontest

import (
	"context"
	"errors"
	"io"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Shadow is a fake session.
type Shadow struct {
	client kubernetes.Interface
	pod    *corev1.Pod
	lost   chan struct{}

	mu      sync.Mutex
	drained []string
	closed  bool
	broken  bool          // the tunnel fails at once
	drop    chan struct{} // closed by Drop: the tunnel being served fails
	serves  int
}

var _ session.Shadow = (*Shadow)(nil)

func (f *Shadow) ShadowPod() *corev1.Pod { return f.pod }

// ServeForwards reports the forwards ready and serves until ctx ends or Drop; while the
// shadow is Broken it fails at once.
func (f *Shadow) ServeForwards(ctx context.Context, _ []session.Forward, _ io.Writer, ready func()) error {
	f.mu.Lock()
	f.serves++
	if f.broken {
		f.mu.Unlock()
		return errors.New("ssh connection to the shadow dropped (fake)")
	}
	drop := f.drop
	f.mu.Unlock()
	ready()
	select {
	case <-ctx.Done():
		return nil
	case <-drop:
		return errors.New("ssh connection to the shadow dropped (fake)")
	}
}

// Break makes the tunnel fail: the one being served drops, and redials fail until Mend.
func (f *Shadow) Break() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = true
	close(f.drop)
	f.drop = make(chan struct{})
}

// Mend lets redials succeed again.
func (f *Shadow) Mend() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = false
}

// Serves counts the calls of ServeForwards: the first dial and every redial.
func (f *Shadow) Serves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.serves
}

func (f *Shadow) KeepForwarding(context.Context, []session.Forward, io.Writer) error { return nil }
func (f *Shadow) Lost() <-chan struct{}                                              { return f.lost }

// Lose makes the session report its pod lost.
func (f *Shadow) Lose() { close(f.lost) }

func (f *Shadow) DrainService(_ context.Context, svc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drained = append(f.drained, svc)
}

// Drained lists the Services the session was drained from.
func (f *Shadow) Drained() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.drained...)
}

// Close deletes the pod.
func (f *Shadow) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return cluster.DeleteShadow(context.Background(), f.client, f.pod.Namespace, f.pod.Name)
}

// Closed reports whether Close was called.
func (f *Shadow) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Starter starts fake sessions in client and records them.
type Starter struct {
	Client kubernetes.Interface

	mu      sync.Mutex
	started []*Shadow
}

// Start is a session.Starter.
func (s *Starter) Start(ctx context.Context, o session.Options) (session.Shadow, error) {
	id := o.ID
	if id == "" {
		id = wire.NewSession()
	}
	pod, err := cluster.CreateShadow(ctx, s.Client, cluster.ShadowSpec{Namespace: o.Namespace, Role: o.Role, Session: id,
		Owner: wire.Owner(), Command: o.Command, ForwardPorts: o.ForwardPorts, Labels: o.Labels, Opts: o.Pod, OwnerRef: o.OwnerRef,
		RestoreService: o.RestoreService, RestoreSession: o.RestoreSession, ServiceAccount: o.ServiceAccount})
	if err != nil {
		return nil, err
	}
	sh := &Shadow{client: s.Client, pod: pod, lost: make(chan struct{}), drop: make(chan struct{})}
	s.mu.Lock()
	s.started = append(s.started, sh)
	s.mu.Unlock()
	return sh, nil
}

// Started lists the sessions started so far.
func (s *Starter) Started() []*Shadow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Shadow(nil), s.started...)
}
