// Package agent runs the shadow agent: the SSH server, the SOCKS5 proxy, the DNS forwarder,
// the UDP relay and the readiness endpoint, and exits once its client has been gone for a while.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	gossh "golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/agent/dnsfwd"
	"github.com/kubectl-kt/kt/pkg/agent/sshd"
	"github.com/kubectl-kt/kt/pkg/agent/udprelay"
	"github.com/kubectl-kt/kt/pkg/version"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Config configures the agent.
type Config struct {
	AuthorizedKey string        // OpenSSH authorized_keys line of the session's public key
	SecretDigest  []byte        // SHA-256 of the client's own stream secret, if it made one (wire.ReadAuth)
	PodIP         string        // where remote forwards and the readiness probe listen
	ProbePort     int           // the readiness probe's port; 0: wire.ProbePort
	ProxyPort     int           // where reverse streams come through the API server's pod proxy (wire/proxy.go); 0: not taken
	ListenIP      string        // where the tunnel services listen; loopback
	ExpireAfter   time.Duration // exit once the client has been gone this long; 0 never
	ResolvConf    string
	KeepAlive     time.Duration
	// RestoreService (namespace/name) is restored when the client is gone, with Session's
	// change only; then the pod PodNamespace/PodName deletes itself.
	RestoreService, Session, PodName, PodNamespace string
	// Deployment (in PodNamespace) runs this agent; it is deleted when the client is gone.
	Deployment string
	// Shared accepts further client keys, registered over the health port (POST /authorize,
	// which only a port-forward to this pod reaches) by a client that proves JoinKey
	// (wire/join.go): a shared connect shadow.
	Shared  bool
	JoinKey string
	// Fallback maps forwarded ports to where their connections go once the client has not
	// been heard from for FallbackAfter (exchange's and mesh's shadows: the original pods'
	// Service), until it is back (sshd.Config.Fallback). OriginService (in PodNamespace) is
	// that Service when this session made it: deleted with the restore on expiry.
	Fallback      map[int]string
	FallbackAfter time.Duration
	OriginService string
}

// Status is served on /version and /readyz.
type Status struct {
	Version         string `json:"version"`
	ProtocolVersion int    `json:"protocolVersion"`
	Ready           bool   `json:"ready"`
	Clients         int    `json:"clients"`
}

// Run runs the agent until ctx ends or the client has been gone for cfg.ExpireAfter. A client
// is there while it holds an SSH connection: every kt client keeps one, and the SSH server
// drops one that stops answering keepalives. Its other connections (mux sessions, moved
// flows, DNS, UDP) do not count: when a laptop vanishes without a word (its network gone, then
// the process killed), they stay open here until the API server notices, which can take many
// minutes, while the SSH connection goes within three keepalives.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ListenIP == "" {
		cfg.ListenIP = "127.0.0.1"
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if cfg.ProbePort == 0 {
		cfg.ProbePort = wire.ProbePort
	}
	if cfg.Shared && len(cfg.JoinKey) < 32 {
		return fmt.Errorf("a shared shadow needs its join key (%s, at least 32 characters)", wire.EnvJoinKey)
	}
	authorized, _, _, _, err := gossh.ParseAuthorizedKey([]byte(cfg.AuthorizedKey))
	if err != nil {
		return fmt.Errorf("parse the authorized key (%s): %w", wire.EnvAuthorizedKey, err)
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	hostKey, err := gossh.NewSignerFromKey(hostPriv)
	if err != nil {
		return err
	}
	fwd, err := dnsfwd.FromResolvConf(cfg.ResolvConf)
	if err != nil {
		return err
	}
	// The stream secret, told over SSH to a logged-in client: every port but SSH and health
	// takes only streams that open with it (wire/auth.go).
	secret := make([]byte, wire.SecretLen)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &agent{cfg: cfg, ctx: ctx, secret: secret, act: NewActivity(nil), ctl: NewActivity(nil), errc: make(chan error, 8)}
	defer a.close()
	keys := newKeySet()
	srv, lastForwarded, err := a.serveSSH(authorized, hostKey, keys)
	if err != nil {
		return err
	}
	for _, start := range []func() error{a.serveFlows, func() error { return a.serveDNS(fwd) }, a.serveReverse, a.serveRelay, a.serveProxy,
		func() error { return a.serveHealth(keys, hostKey, lastForwarded) }, func() error { return a.serveProbe(srv) }} {
		if err := start(); err != nil {
			return err
		}
	}
	klog.FromContext(ctx).Info("kt shadow agent ready", "version", version.Version, "protocol", wire.ProtocolVersion, "podIP", cfg.PodIP, "expireAfter", cfg.ExpireAfter)
	return a.wait()
}

// agent is one Run: its listeners and the goroutines serving them.
type agent struct {
	cfg    Config
	ctx    context.Context
	secret []byte
	act    *Activity // every client connection
	ctl    *Activity // SSH connections: the client's presence

	wg      sync.WaitGroup
	errc    chan error
	reverse reversePool
	closers []func() error
}

// close stops every server and waits for their goroutines.
func (a *agent) close() {
	for _, c := range a.closers {
		c()
	}
	a.wg.Wait()
}

// listen listens on one of the agent's loopback ports; every port but SSH and health takes
// only streams that open with the secret.
func (a *agent) listen(port int) (net.Listener, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(a.cfg.ListenIP, strconv.Itoa(port)))
	if err != nil || !wire.Authenticated(port) {
		return l, err
	}
	return newAuthListener(l, a.secret, a.cfg.SecretDigest), nil
}

// run runs f in the background; its error (but a closed listener's) ends Run.
func (a *agent) run(name string, f func() error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := f(); err != nil && a.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			a.errc <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// serveSSH serves the client's SSH connections; lastForwarded is when a connection last came
// in on a forwarded port (Unix nanoseconds).
func (a *agent) serveSSH(authorized gossh.PublicKey, hostKey gossh.Signer, keys *keySet) (*sshd.Server, *atomic.Int64, error) {
	sshL, err := a.listen(wire.SSHPort)
	if err != nil {
		return nil, nil, err
	}
	scfg := sshd.Config{AuthorizedKey: authorized, HostKey: hostKey, Secret: a.secret, ForwardIP: a.cfg.PodIP, KeepAlive: a.cfg.KeepAlive, OnConn: func() func() {
		end, endCtl := a.act.Begin(), a.ctl.Begin()
		return func() { endCtl(); end() }
	}}
	scfg.Reverse = a.reverse.take
	if len(a.cfg.Fallback) > 0 && a.cfg.FallbackAfter > 0 {
		// Hear from the client often enough to tell within FallbackAfter that it is gone.
		scfg.Fallback, scfg.FallbackAfter = a.cfg.Fallback, a.cfg.FallbackAfter
		scfg.KeepAlive = a.cfg.FallbackAfter / 5
		if a.cfg.KeepAlive > 0 {
			scfg.KeepAlive = min(scfg.KeepAlive, a.cfg.KeepAlive)
		}
		scfg.Timeout = a.cfg.FallbackAfter - scfg.KeepAlive
	}
	scfg.OnRelease = a.reverse.flush
	lastForwarded := &atomic.Int64{} // the start before the first
	lastForwarded.Store(time.Now().UnixNano())
	scfg.OnForwarded = func() { lastForwarded.Store(time.Now().UnixNano()) }
	if a.cfg.Shared {
		scfg.Also = keys.has
		scfg.OnAuth = keys.connected
	}
	srv := sshd.New(scfg)
	a.closers = append(a.closers, srv.Close)
	a.run("ssh", func() error { return srv.Serve(sshL) })
	return srv, lastForwarded, nil
}

// serveFlows serves TCP flows on mux sessions, and the streams large downloads and uploads
// move to.
func (a *agent) serveFlows() error {
	fl := NewFlows()
	for port, serve := range map[int]func(net.Conn){wire.MuxPort: fl.ServeSession, wire.MovePort: fl.ServeMove} {
		l, err := a.listen(port)
		if err != nil {
			return err
		}
		a.closers = append(a.closers, l.Close)
		a.run("flows", func() error { return a.act.serve(l, serve) })
	}
	return nil
}

// serveDNS serves DNS over TCP, forwarded to the pod's resolvers.
func (a *agent) serveDNS(fwd dns.Handler) error {
	dnsL, err := a.listen(wire.DNSPort)
	if err != nil {
		return err
	}
	dnsSrv := &dns.Server{Listener: trackedListener{dnsL, a.act}, Net: "tcp", Handler: fwd, ReadTimeout: 30 * time.Second, IdleTimeout: func() time.Duration { return 2 * time.Minute }}
	a.closers = append(a.closers, dnsSrv.Shutdown)
	a.run("dns", dnsSrv.ActivateAndServe)
	return nil
}

// serveReverse takes the client's reverse streams, for remote forwards.
func (a *agent) serveReverse() error {
	reverseL, err := a.listen(wire.ReversePort)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, reverseL.Close, func() error { a.reverse.flush(); return nil })
	a.run("reverse streams", func() error { return a.reverse.serve(reverseL) })
	return nil
}

// serveRelay serves the UDP relay's streams.
func (a *agent) serveRelay() error {
	relayL, err := a.listen(wire.UDPRelayPort)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, relayL.Close)
	a.run("udp relay", func() error {
		return a.act.serve(relayL, func(c net.Conn) {
			if err := udprelay.Serve(c); err != nil {
				klog.Background().V(1).Info("udp relay stream ended", "err", err)
			}
		})
	})
	return nil
}

// serveHealth serves readiness, version, traffic and (for a shared shadow) joins on the
// health port.
func (a *agent) serveHealth(keys *keySet, hostKey gossh.Signer, lastForwarded *atomic.Int64) error {
	healthL, err := a.listen(wire.HealthPort)
	if err != nil {
		return err
	}
	status := func() Status {
		return Status{Version: version.Version, ProtocolVersion: wire.ProtocolVersion, Ready: true, Clients: a.act.Active()}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(status())
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(status())
	})
	handleTraffic(mux, func() time.Duration { return time.Since(time.Unix(0, lastForwarded.Load())) })
	if a.cfg.Shared {
		handleJoins(mux, keys, []byte(a.cfg.JoinKey), hostKey.PublicKey())
	}
	a.serveHTTP("health", healthL, mux)
	return nil
}

// serveProbe serves the kubelet's readiness probe, on the pod's IP: a forwarded port is ready
// once the client's forward listens on it. (Probing that port itself would count as traffic.)
func (a *agent) serveProbe(srv *sshd.Server) error {
	probeL, err := net.Listen("tcp", net.JoinHostPort(a.cfg.PodIP, strconv.Itoa(a.cfg.ProbePort)))
	if err != nil {
		return fmt.Errorf("readiness probe: %w", err)
	}
	probeMux := http.NewServeMux()
	probeMux.HandleFunc("/forwarding", func(w http.ResponseWriter, r *http.Request) {
		port, err := strconv.Atoi(r.URL.Query().Get("port"))
		switch {
		case err != nil:
			http.Error(w, "want ?port=N", http.StatusBadRequest)
		case !srv.Forwarding(port):
			http.Error(w, "no forward listens on this port yet", http.StatusServiceUnavailable)
		}
	})
	a.serveHTTP("readiness probe", probeL, probeMux)
	return nil
}

func (a *agent) serveHTTP(name string, l net.Listener, h http.Handler) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	a.closers = append(a.closers, hs.Close)
	a.run(name, func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// wait runs until ctx ends, a server fails, or the client has been gone ExpireAfter (then the
// shadow restores what its client changed, and exits).
func (a *agent) wait() error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-a.ctx.Done():
			klog.Background().Info("shutting down")
			return nil
		case err := <-a.errc:
			return err
		case <-tick.C:
			if a.cfg.ExpireAfter > 0 && a.ctl.Idle() >= a.cfg.ExpireAfter {
				klog.Background().Info("client gone; expiring", "gone", a.ctl.Idle().Round(time.Second), "leftConnections", a.act.Active())
				selfRestore(a.cfg)
				return nil
			}
		}
	}
}

// handleTraffic serves /traffic (wire.Traffic) on mux: since is how long ago a connection
// last came in on a forwarded or routed port.
func handleTraffic(mux *http.ServeMux, since func() time.Duration) {
	mux.HandleFunc("/traffic", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(wire.Traffic{SinceLastAccept: since()})
	})
}

// trackedListener counts each accepted connection as client activity until it closes.
type trackedListener struct {
	net.Listener
	act *Activity
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, end: l.act.Begin()}, nil
}

type trackedConn struct {
	net.Conn
	end func()
}

func (c *trackedConn) Close() error {
	c.end()
	return c.Conn.Close()
}
