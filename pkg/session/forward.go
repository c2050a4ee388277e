package session

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Forward sends connections arriving at Remote on the shadow pod's IP to Local on this machine.
type Forward struct {
	Remote int
	Local  string // host:port
	// Port is the port the user named it by, the Service's, for messages; 0: Remote.
	Port int
	// Linger, when set, gathers what the local side sends back for this long before it goes
	// to the shadow (pipe.Gathering): for a mirror's copies, whose answers nobody waits for.
	Linger time.Duration
}

// ServeForwards listens on every Remote port of the shadow and relays each connection to its
// Local address, until ctx ends or the SSH connection drops (then it returns, so the caller
// can reconnect and serve again). ready is called once every listener is up.
func (s *Session) ServeForwards(ctx context.Context, fwds []Forward, warn io.Writer, ready func()) error {
	sc, err := s.SSH(ctx)
	if err != nil {
		return err
	}
	w := &warner{w: warn}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, f := range fwds {
		l, err := sc.Listen(f.Remote)
		if err != nil {
			return fmt.Errorf("listen on port %d in shadow pod %s: %w", f.Remote, s.Pod.Name, err)
		}
		ls = append(ls, l)
		go serve(ctx, l, f, w)
	}
	// Connections also come back on port-forward streams of their own (faster than inside
	// SSH); these workers keep a few open, and stop with this call.
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	gen := uint64(time.Now().UnixNano())
	for i := 0; i < reverseStreams; i++ {
		go s.reverseWorker(rctx, gen, sc.Secret, fwds, w)
	}
	if ready != nil {
		ready()
	}
	if len(s.opts.Fallback) > 0 {
		s.sayResumed(sc, warn)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-sc.Done():
		return fmt.Errorf("ssh connection to the shadow dropped")
	}
}

// sayResumed tells whether the agent had sent the forwards' traffic to the original pods
// before this connection took the ports back.
func (s *Session) sayResumed(sc *sshtunnel.Client, warn io.Writer) {
	ok, b, err := sc.SendRequest(wire.ResumedRequest, true, nil)
	var r wire.Resumed
	if err != nil || !ok || json.Unmarshal(b, &r) != nil || r.Paused <= 0 {
		return
	}
	fmt.Fprintf(warn, "Resumed: traffic comes to this machine again; the shadow had sent it to the original pods for %s (%d connections)\n", r.Paused.Round(100*time.Millisecond), r.Relayed)
}

// warner prints a warning at most every 5 seconds.
type warner struct {
	w    io.Writer
	mu   sync.Mutex
	last time.Time
}

// say prints at once, for a line said only once (the caller sees to that).
func (w *warner) say(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.w, format, a...)
}

func (w *warner) printf(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.last) > 5*time.Second {
		w.last = time.Now()
		fmt.Fprintf(w.w, format, a...)
	}
}

func serve(ctx context.Context, l net.Listener, f Forward, warn *warner) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go toLocal(ctx, c, f, warn)
	}
}

// toLocal relays a connection that arrived on the shadow's port f.Remote to f.Local.
func toLocal(ctx context.Context, c net.Conn, f Forward, warn *warner) {
	var d net.Dialer
	lc, err := d.DialContext(ctx, "tcp", f.Local)
	if err != nil {
		c.Close()
		port := f.Port
		if port == 0 {
			port = f.Remote
		}
		warn.printf("warning: a connection for port %d arrived, but nothing listens on %s (start the local server, or fix --expose): %v\n", port, f.Local, err)
		return
	}
	klog.FromContext(ctx).V(4).Info("forwarded connection", "remote", f.Remote, "local", f.Local)
	if f.Linger > 0 {
		pipe.Gathering(c, lc, f.Linger)
		return
	}
	pipe.Conns(c, lc)
}

// reverseStreams is how many idle reverse streams a session keeps open to its agent.
const reverseStreams = 4

// reverseWorker keeps one reverse stream open and relays each connection the agent hands it
// to the forward's local address.
func (s *Session) reverseWorker(ctx context.Context, gen uint64, secret []byte, fwds []Forward, warn *warner) {
	byPort := map[int]Forward{}
	for _, f := range fwds {
		byPort[f.Remote] = f
	}
	for backoff := 100 * time.Millisecond; ctx.Err() == nil; {
		c, viaProxy, err := s.dialReverse(ctx, secret, warn)
		if err == nil {
			err = wire.WriteReverseHello(c, gen)
		}
		var port int
		if err == nil {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			port, err = wire.ReadReverseGo(c) // waits, possibly for hours, until a connection comes
			stop()
		}
		if err != nil {
			if c != nil {
				c.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if viaProxy {
			s.usedProxy(warn)
		}
		f, ok := byPort[port]
		if !ok {
			f = Forward{Remote: port} // dialing "" fails, and is said so
		}
		go toLocal(ctx, c, f, warn)
	}
}

// LocalAddr is the address a local port is reached on.
func LocalAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// KeepForwarding serves fwds in the background until the session is closed (not when ctx
// ends: what still arrives while the command undoes its changes on the way out is served),
// reconnecting whenever the tunnel drops, and returns once the forwards listen and the pod
// is ready (its readiness probe asks for the first forwarded port), or ctx ends. Lost is
// closed if the shadow pod goes away (deleted, or its agent exited), after which nothing can
// reconnect.
func (s *Session) KeepForwarding(ctx context.Context, fwds []Forward, warn io.Writer) error {
	ready := make(chan struct{})
	var once sync.Once
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.stopForwarding = append(s.stopForwarding, stop)
	s.mu.Unlock()
	outage := &Outage{W: warn, What: s.opts.Role}
	if s.opts.What != "" {
		outage.What = s.opts.What
	}
	if len(s.opts.Fallback) > 0 {
		outage.PauseAfter = s.opts.Pod.FallbackAfter
	}
	go func() {
		for fctx.Err() == nil {
			err := s.ServeForwards(fctx, fwds, warn, func() { outage.Up(); once.Do(func() { close(ready) }) })
			if fctx.Err() != nil {
				return
			}
			gone, apiErr := PodGone(fctx, s.client, s.opts.Namespace, s.Pod.Name)
			if gone {
				close(s.lost)
				return
			}
			outage.Failed(fctx, err, apiErr)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
	_, err := cluster.WaitRunning(ctx, s.client, s.opts.Namespace, s.Pod.Name, s.opts.Pod.PodCreationTimeout, true)
	return err
}

// CheckLocal fails unless something listens on localhost at each port.
func CheckLocal(ports ...int) error {
	for _, p := range ports {
		if err := checkLocal(p); err != nil {
			return err
		}
	}
	return nil
}

func checkLocal(port int) error {
	c, err := net.DialTimeout("tcp", LocalAddr(port), time.Second)
	if err != nil {
		return fmt.Errorf("nothing listens on localhost:%d; start your service first, or pass --skip-port-checking", port)
	}
	return c.Close()
}
