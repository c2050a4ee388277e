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
	PodIP         string        // where remote forwards and the readiness probe listen
	ProbePort     int           // the readiness probe's port; 0: wire.ProbePort
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
	listen := func(port int) (net.Listener, error) {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.ListenIP, strconv.Itoa(port)))
		if err != nil || !wire.Authenticated(port) {
			return l, err
		}
		return newAuthListener(l, secret), nil
	}
	act := NewActivity(nil) // every client connection
	ctl := NewActivity(nil) // SSH connections: the client's presence
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	// SSH
	sshL, err := listen(wire.SSHPort)
	if err != nil {
		return err
	}
	keys := newKeySet()
	reverse := &reversePool{}
	scfg := sshd.Config{AuthorizedKey: authorized, HostKey: hostKey, Secret: secret, ForwardIP: cfg.PodIP, KeepAlive: cfg.KeepAlive, OnConn: func() func() {
		end, endCtl := act.Begin(), ctl.Begin()
		return func() { endCtl(); end() }
	}}
	scfg.Reverse = reverse.take
	var lastForwarded atomic.Int64 // Unix nanoseconds; the start before the first
	lastForwarded.Store(time.Now().UnixNano())
	scfg.OnForwarded = func() { lastForwarded.Store(time.Now().UnixNano()) }
	if cfg.Shared {
		scfg.Also = keys.has
		scfg.OnAuth = keys.connected
	}
	srv := sshd.New(scfg)
	closers = append(closers, srv.Close)
	run("ssh", func() error { return srv.Serve(sshL) })

	// TCP flows on mux sessions, and the streams large downloads and uploads move to
	fl := NewFlows()
	for port, serve := range map[int]func(net.Conn){wire.MuxPort: fl.ServeSession, wire.MovePort: fl.ServeMove} {
		l, err := listen(port)
		if err != nil {
			return err
		}
		closers = append(closers, l.Close)
		run("flows", func() error { return act.serve(l, serve) })
	}

	// DNS over TCP
	dnsL, err := listen(wire.DNSPort)
	if err != nil {
		return err
	}
	dnsSrv := &dns.Server{Listener: trackedListener{dnsL, act}, Net: "tcp", Handler: fwd, ReadTimeout: 30 * time.Second, IdleTimeout: func() time.Duration { return 2 * time.Minute }}
	closers = append(closers, dnsSrv.Shutdown)
	run("dns", dnsSrv.ActivateAndServe)

	// Reverse streams for remote forwards
	reverseL, err := listen(wire.ReversePort)
	if err != nil {
		return err
	}
	closers = append(closers, reverseL.Close, func() error { reverse.flush(); return nil })
	run("reverse streams", func() error { return reverse.serve(reverseL) })

	// UDP relay
	relayL, err := listen(wire.UDPRelayPort)
	if err != nil {
		return err
	}
	closers = append(closers, relayL.Close)
	run("udp relay", func() error {
		return act.serve(relayL, func(c net.Conn) {
			if err := udprelay.Serve(c); err != nil {
				klog.V(1).InfoS("udp relay stream ended", "err", err)
			}
		})
	})

	// readiness
	healthL, err := listen(wire.HealthPort)
	if err != nil {
		return err
	}
	status := func() Status {
		return Status{Version: version.Version, ProtocolVersion: wire.ProtocolVersion, Ready: true, Clients: act.Active()}
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
	if cfg.Shared {
		handleJoins(mux, keys, []byte(cfg.JoinKey), hostKey.PublicKey())
	}
	serveHTTP := func(name string, l net.Listener, h http.Handler) {
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		closers = append(closers, hs.Close)
		run(name, func() error {
			if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	serveHTTP("health", healthL, mux)

	// The kubelet's readiness probe, on the pod's IP: a forwarded port is ready once the
	// client's forward listens on it. (Probing that port itself would count as traffic.)
	if cfg.ProbePort == 0 {
		cfg.ProbePort = wire.ProbePort
	}
	probeL, err := net.Listen("tcp", net.JoinHostPort(cfg.PodIP, strconv.Itoa(cfg.ProbePort)))
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
	serveHTTP("readiness probe", probeL, probeMux)

	klog.InfoS("kt shadow agent ready", "version", version.Version, "protocol", wire.ProtocolVersion, "podIP", cfg.PodIP, "expireAfter", cfg.ExpireAfter)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			klog.InfoS("shutting down")
			return nil
		case err := <-errc:
			return err
		case <-tick.C:
			if cfg.ExpireAfter > 0 && ctl.Idle() >= cfg.ExpireAfter {
				klog.InfoS("client gone; expiring", "gone", ctl.Idle().Round(time.Second), "leftConnections", act.Active())
				selfRestore(cfg)
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
