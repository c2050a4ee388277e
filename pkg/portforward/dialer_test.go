package portforward

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeTunnel struct{ closed atomic.Bool }

func (t *fakeTunnel) open(context.Context, uint16, string) (stream, stream, error) {
	return nil, nil, errors.New("not here")
}
func (t *fakeTunnel) alive() bool  { return !t.closed.Load() }
func (t *fakeTunnel) Close() error { t.closed.Store(true); return nil }

// slowDialer dials a fakeTunnel after delay, counting the dials.
func slowDialer(delay time.Duration, n *atomic.Int32) *Dialer {
	d := &Dialer{Namespace: "ns", Pod: "pod", Timeout: 5 * time.Second}
	d.dialFunc = func() (tunnel, string, error) {
		n.Add(1)
		time.Sleep(delay)
		return &fakeTunnel{}, "fake", nil
	}
	return d
}

// Callers that come while the tunnel is being dialled wait for that dial and share it.
func TestConnectionSharesOneDial(t *testing.T) {
	var dials atomic.Int32
	d := slowDialer(100*time.Millisecond, &dials)
	var wg sync.WaitGroup
	tuns := make([]tunnel, 10)
	for i := range tuns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tun, err := d.connection(context.Background())
			if err != nil {
				t.Error(err)
			}
			tuns[i] = tun
		}()
	}
	wg.Wait()
	if dials.Load() != 1 {
		t.Fatalf("%d dials for 10 concurrent callers, want 1", dials.Load())
	}
	for _, tun := range tuns[1:] {
		if tun != tuns[0] {
			t.Fatal("callers got different tunnels")
		}
	}
	// a dead tunnel is replaced
	tuns[0].Close()
	if tun, err := d.connection(context.Background()); err != nil || tun == tuns[0] || dials.Load() != 2 {
		t.Fatalf("after the tunnel closed: %v, same tunnel %v, %d dials", err, tun == tuns[0], dials.Load())
	}
}

// A caller waiting for someone else's dial gives up when its own context ends, and a caller
// whose dial outlived its context does not hand that failure to the others.
func TestConnectionWaitFollowsTheCallersContext(t *testing.T) {
	var dials atomic.Int32
	d := slowDialer(time.Second, &dials) // far longer than the waiting caller's 50ms
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := d.connection(leaderCtx)
		leaderErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // the leader is dialling
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := d.connection(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 500*time.Millisecond {
		t.Fatalf("waiting caller: %v after %s, want its deadline after 50ms", err, time.Since(t0))
	}
	follower := make(chan error, 1)
	go func() {
		_, err := d.connection(context.Background())
		follower <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancelLeader()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v, want canceled", err)
	}
	if err := <-follower; err != nil {
		t.Fatalf("the follower took the leader's cancellation: %v", err)
	}
	if dials.Load() != 2 {
		t.Fatalf("%d dials, want the leader's and the follower's own", dials.Load())
	}
}
