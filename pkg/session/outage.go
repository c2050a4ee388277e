package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
)

// PodGone asks the API server whether the shadow pod ns/name is gone: deleted (NotFound),
// being deleted, or ended. A tunnel that fails is not a lost shadow: while the API server does
// not answer, the pod is presumed still there, and err says why it could not be asked.
func PodGone(ctx context.Context, client kubernetes.Interface, ns, name string) (gone bool, err error) {
	p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return cluster.PodEnding(p), nil
}

// Outage reports the outages of one session's tunnel: the first failure of an outage prints
// one line and later ones none (never a warning loop), the redial waits a growing delay, and
// the first success after an outage says so.
type Outage struct {
	W    io.Writer
	What string // what stays in place meanwhile, for the message: "exchange", "mesh", …
	// PauseAfter, when set, is the shadow's --fallback-after: an outage that long says, once,
	// that the shadow has paused (sends the traffic to the original pods).
	PauseAfter time.Duration

	mu     sync.Mutex
	since  time.Time // when the outage began; zero while the tunnel is up
	delay  time.Duration
	paused bool
}

// Failed records a failure of the tunnel (tunnelErr) and, when the API server could not say
// whether the pod is still there, its error (apiErr); then it waits before the next redial,
// 200 ms doubling up to 5 s, or until ctx ends.
func (o *Outage) Failed(ctx context.Context, tunnelErr, apiErr error) {
	o.mu.Lock()
	if o.since.IsZero() {
		o.since, o.delay = time.Now(), 200*time.Millisecond
		if apiErr != nil {
			fmt.Fprintf(o.W, "warning: API server unreachable (%v); retrying, your %s stays in place\n", apiErr, o.What)
		} else {
			fmt.Fprintf(o.W, "Tunnel to the shadow dropped (%v); reconnecting\n", tunnelErr)
		}
	} else {
		o.delay = min(2*o.delay, 5*time.Second)
	}
	if o.PauseAfter > 0 && !o.paused && time.Since(o.since) >= o.PauseAfter {
		o.paused = true
		fmt.Fprintf(o.W, "Paused: the shadow has not heard from this machine for %s and sends your %s's traffic to the original pods until this machine is back\n", o.PauseAfter, o.What)
	}
	d := o.delay
	o.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Up records that the tunnel works (again).
func (o *Outage) Up() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		fmt.Fprintf(o.W, "Reconnected to the shadow after %s; your %s is served again\n", time.Since(o.since).Round(100*time.Millisecond), o.What)
		o.since, o.paused = time.Time{}, false
	}
}

// Down reports whether an outage is going on.
func (o *Outage) Down() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.since.IsZero()
}

// LockWatch reads the outcome of each heartbeat of a Service lock (exchange's, mesh's): a
// failed update (the API server away) is said once and tolerated, and the lock and the
// Service stay as they are; a lost lock (cluster.ErrLockLost) ends the session.
type LockWatch struct {
	W    io.Writer
	What string // "exchange of service ns/name", for the messages

	down bool
}

// Observe takes a heartbeat's error; it returns the error that ends the session, if any.
func (l *LockWatch) Observe(err error) error {
	switch {
	case err == nil:
		if l.down {
			fmt.Fprintf(l.W, "API server reachable again; the %s is still in place\n", l.What)
			l.down = false
		}
	case errors.Is(err, cluster.ErrLockLost):
		return fmt.Errorf("the %s ended while this client could not keep it: %w; start it again", l.What, err)
	case !l.down:
		fmt.Fprintf(l.W, "warning: cannot refresh the %s's heartbeat (%v); retrying, it stays in place\n", l.What, err)
		l.down = true
	}
	return nil
}
