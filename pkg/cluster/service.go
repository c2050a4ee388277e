package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// StaleAfter is how old a lock's heartbeat may get before another session may take it over.
const StaleAfter = 90 * time.Second

// LockedError says who holds a Service.
type LockedError struct {
	Service string
	Lock    wire.Lock
}

func (e *LockedError) Error() string {
	join := ""
	if e.Lock.Role == wire.RoleMesh {
		join = "; 'kubectl kt mesh' and 'kubectl kt mirror' can work beside them"
	}
	return fmt.Sprintf("service %s is %s by %s since %s (last heartbeat %s ago); wait until they stop, or if their session is gone, retry after %s or run 'kubectl kt recover %s'%s",
		e.Service, wire.Done(e.Lock.Role), e.Lock.Owner, e.Lock.Since.Local().Format("15:04:05"),
		time.Since(e.Lock.Heartbeat).Round(time.Second), StaleAfter, e.Service, join)
}

// UpdateService applies mutate to the Service with optimistic concurrency, retrying on
// conflicts.
func UpdateService(ctx context.Context, client kubernetes.Interface, ns, name string, mutate func(*corev1.Service) (bool, error)) (*corev1.Service, error) {
	var out *corev1.Service
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed, err := mutate(svc)
		if err != nil || !changed {
			out = svc
			return err
		}
		out, err = client.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, Explain(err, "update", "services", ns)
	}
	return out, nil
}

// LockService takes the lock on a Service for l. A lock held by another live session fails
// with a *LockedError; one whose heartbeat is older than StaleAfter is taken over and
// returned (with the Service restored from the old session's change first).
func LockService(ctx context.Context, client kubernetes.Interface, ns, name string, l wire.Lock) (prev *wire.Lock, svc *corev1.Service, err error) {
	svc, err = UpdateService(ctx, client, ns, name, func(s *corev1.Service) (bool, error) {
		prev = nil
		if cur, ok := wire.ServiceLock(s); ok && cur.Session != l.Session {
			if time.Since(cur.Heartbeat) < StaleAfter {
				return false, &LockedError{Service: ns + "/" + name, Lock: *cur}
			}
			if _, err := wire.RestoreService(s, ""); err != nil {
				return false, err
			}
			prev = cur
		}
		wire.SetServiceLock(s, l)
		return true, nil
	})
	return prev, svc, err
}

// RedirectService points the Service's selector at sel, recording the original.
func RedirectService(ctx context.Context, client kubernetes.Interface, ns, name, session string, sel map[string]string) error {
	_, err := UpdateService(ctx, client, ns, name, func(s *corev1.Service) (bool, error) {
		if l, ok := wire.ServiceLock(s); !ok || l.Session != session {
			return false, fmt.Errorf("service %s/%s lost its lock to another session", ns, name)
		}
		wire.RedirectService(s, sel)
		return true, nil
	})
	return err
}

// RestoreService undoes kt's change to the Service (only session's, when set). A missing
// Service is not an error: there is nothing to restore. A selector that someone changed
// while kt held the Service stays (wire.Restored.Kept).
func RestoreService(ctx context.Context, client kubernetes.Interface, ns, name, session string) (wire.Restored, error) {
	var r wire.Restored
	_, err := UpdateService(ctx, client, ns, name, func(s *corev1.Service) (bool, error) {
		var err error
		r, err = wire.RestoreService(s, session)
		return r.Changed, err
	})
	if apierrors.IsNotFound(err) {
		return wire.Restored{}, nil
	}
	return r, err
}

// ErrLockLost is a session's lock gone from its Service: restored by the shadow after the
// client was away longer than its expiry, by recover or clean, or taken over.
var ErrLockLost = errors.New("no longer locked by this session")

// HeartbeatService refreshes the lock's heartbeat.
func HeartbeatService(ctx context.Context, client kubernetes.Interface, ns, name, session string) error {
	_, err := UpdateService(ctx, client, ns, name, func(s *corev1.Service) (bool, error) {
		l, ok := wire.ServiceLock(s)
		if !ok || l.Session != session {
			return false, fmt.Errorf("service %s/%s is %w", ns, name, ErrLockLost)
		}
		l.Heartbeat = time.Now().UTC()
		wire.SetServiceLock(s, *l)
		return true, nil
	})
	return err
}

// DrainEndpoint waits until no endpoint of the Service is ip (a shadow or router about to be
// deleted) and then for kube-proxy to follow, so that no new connection is sent to a pod
// that is gone (its SYN would vanish and the client hang). It gives up quietly after timeout.
func DrainEndpoint(ctx context.Context, client kubernetes.Interface, ns, name, ip string, timeout time.Duration) {
	if ip == "" {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		eps, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
		if err != nil {
			return
		}
		found := false
		for _, s := range eps.Items {
			for _, ep := range s.Endpoints {
				found = found || slices.Contains(ep.Addresses, ip)
			}
		}
		if !found {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(wire.KubeProxySync):
	}
}

// WaitEndpoints waits until the Service's ready endpoints are exactly the given pod IPs, so
// that a switched selector has reached the endpoint controller (kube-proxy follows within
// about a second).
func WaitEndpoints(ctx context.Context, client kubernetes.Interface, ns, name string, ips []string, timeout time.Duration) error {
	want := map[string]bool{}
	for _, ip := range ips {
		want[ip] = true
	}
	deadline := time.Now().Add(timeout)
	for {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
		if err == nil {
			got := map[string]bool{}
			for _, s := range slices.Items {
				for _, ep := range s.Endpoints {
					if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
						for _, a := range ep.Addresses {
							got[a] = true
						}
					}
				}
			}
			if len(got) == len(want) {
				same := true
				for a := range got {
					same = same && want[a]
				}
				if same {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s/%s does not point at the shadow after %s (endpoints not updated)", ns, name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
