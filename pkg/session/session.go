// Package session runs one client session with a shadow agent: the session's key pair, the
// shadow pod, the port-forward tunnel, the SSH connection, and the teardown of all of them.
package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/progress"
	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/undo"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Options configure a session.
type Options struct {
	Namespace string
	Role      string
	// What names the session in its messages ("your mirror is served again"); default Role.
	What         string
	Command      string
	Pod          *cluster.PodOptions
	ForwardPorts []corev1.ContainerPort
	Labels       map[string]string
	// ID, when set, is the session id (default: random).
	ID string
	// RestoreService, ServiceAccount and OwnerRef go into the ShadowSpec.
	RestoreService string
	RestoreSession string
	ServiceAccount string
	OwnerRef       *metav1.OwnerReference
	Protocol       portforward.Protocol
	KeepAlive      time.Duration
	// Deployment runs the shadow from a Deployment, which replaces a deleted pod (NextPod).
	Deployment bool
	// Shared joins the namespace's shared shadow of this role, or starts it; the last client
	// to leave deletes it.
	Shared bool
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Fallback and OriginService go into the ShadowSpec: where the shadow sends the traffic
	// of its forwarded ports while this client is away.
	Fallback      map[int]string
	OriginService string
	// PodProxy has forwarded connections come back through the API server's pod proxy when it
	// lets this client, else through the port-forward (see dialReverse).
	PodProxy bool
	// Said, when set, is shared by the sessions of one command (a shadow and the ones that
	// replace it), so that a note on the connections' path is said once in all; nil: once
	// per session.
	Said *Said
}

// Said is what a command's sessions have told the user once.
type Said struct {
	proxyUsed atomic.Bool // that connections come through the pod proxy
}

// Session is a running shadow with its tunnel.
type Session struct {
	ID     string
	Pod    *corev1.Pod
	Dialer *portforward.Dialer

	opts       Options
	config     *rest.Config
	client     kubernetes.Interface
	signer     gossh.Signer
	deployment string
	others     int           // a shared shadow's other clients, counted on Close
	joinKey    []byte        // a shared shadow's (wire/join.go)
	lost       chan struct{} // closed when KeepForwarding finds the pod gone
	undo       undo.Stack

	// sshMu makes one SSH connection at a time and guards hostKey; it is taken before mu,
	// which is held only briefly, so that streams open while a login is on its way.
	sshMu   sync.Mutex
	hostKey sshtunnel.HostKey // the agent's, pinned on the first SSH connection

	mu             sync.Mutex
	ssh            *sshtunnel.Client
	secret         []byte               // the agent's stream secret, told over SSH
	own            []byte               // the stream secret this client made for a pod of its own (its digest is in the pod)
	stopForwarding []context.CancelFunc // KeepForwarding's, called first by Close

	stopHeartbeat context.CancelFunc
	proxyRefused  atomic.Bool // the pod proxy refused this client: reverse streams take the port-forward
	proxyUsed     atomic.Bool // a connection came through the pod proxy (said once)
	proxyFails    atomic.Int32
	proxyDials    *rate.Limiter // bounds the handshakes the pod proxy costs the API server
}

// HeartbeatInterval is how often a session refreshes its pod's heartbeat annotation, which
// `kubectl kt clean` reads to tell live sessions from abandoned ones.
const HeartbeatInterval = wire.PodHeartbeatInterval

// Start creates the shadow pod, waits for it, and connects to its agent. On error everything
// already created is removed again.
func Start(ctx context.Context, config *rest.Config, client kubernetes.Interface, o Options) (s *Session, err error) {
	if o.KeepAlive == 0 {
		o.KeepAlive = 5 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	id := o.ID
	if o.Shared {
		id = SharedID
	}
	if id == "" {
		id = wire.NewSession()
	}
	sess := &Session{ID: id, opts: o, config: config, client: client, signer: signer, lost: make(chan struct{}),
		proxyDials: rate.NewLimiter(proxyDialRate, proxyDialBurst)}
	s = sess
	var digest string
	if !o.Shared { // a pod of its own: streams open with a secret of its own (wire/auth.go)
		s.own = make([]byte, wire.SecretLen)
		if _, err := rand.Read(s.own); err != nil {
			return nil, err
		}
		digest = wire.SecretDigest(s.own)
	}
	defer func() {
		if err != nil { // s is nil by now: tear down through sess
			if uerr := sess.undo.Run(30 * time.Second); uerr != nil {
				klog.FromContext(ctx).Error(uerr, "teardown after a failed start")
			}
		}
	}()
	spec := cluster.ShadowSpec{
		Namespace:      o.Namespace,
		Role:           o.Role,
		Session:        s.ID,
		Owner:          wire.Owner(),
		Command:        o.Command,
		AuthorizedKey:  strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey()))),
		SecretDigest:   digest,
		ForwardPorts:   o.ForwardPorts,
		Labels:         o.Labels,
		Opts:           o.Pod,
		RestoreService: o.RestoreService,
		RestoreSession: o.RestoreSession,
		Fallback:       o.Fallback,
		OriginService:  o.OriginService,
		ServiceAccount: o.ServiceAccount,
		OwnerRef:       o.OwnerRef,
		Deployment:     o.Deployment,
		Shared:         o.Shared,
		PodProxy:       o.PodProxy,
	}
	for _, p := range o.ForwardPorts {
		if p.ContainerPort < 1024 {
			fmt.Fprintf(o.Progress, "Port %d is below 1024: the shadow runs as non-root without capabilities, so its pod sets the safe sysctl net.ipv4.ip_unprivileged_port_start=0 (allowed by Pod Security \"restricted\")\n", p.ContainerPort)
			break
		}
	}
	t0 := time.Now()
	var pod *corev1.Pod
	if o.Deployment {
		pod, err = s.startDeployment(ctx, spec)
	} else {
		pod, err = s.startPod(ctx, spec)
	}
	if err != nil {
		return nil, err
	}
	s.Pod = pod
	if s.Dialer == nil {
		s.Dialer = s.dialer(pod)
		s.undo.Push("close port-forward", func(context.Context) error { return s.Dialer.Close() })
	}
	if o.Shared {
		if err := s.authorize(ctx); err != nil {
			return nil, err
		}
	}
	if o.Role == wire.RoleConnect && s.own != nil {
		// connect needs no SSH before its first stream: its supervisor logs in next, off the
		// path to "Connected" (over a slow link the handshake is 7 round trips).
		err = s.probe(ctx)
	} else {
		_, err = s.SSH(ctx)
	}
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopHeartbeat = cancel
	go s.heartbeat(hctx)
	fmt.Fprintf(o.Progress, "Shadow pod %s/%s (%s) ready after %s, tunnel over %s\n", o.Namespace, pod.Name, pod.Status.PodIP, time.Since(t0).Round(10*time.Millisecond), s.Dialer.Tunnel())
	return s, nil
}

// startPod creates the shadow pod, or joins the shared one, and waits for it to run.
func (s *Session) startPod(ctx context.Context, spec cluster.ShadowSpec) (*corev1.Pod, error) {
	o, client := s.opts, s.client
	var pod *corev1.Pod
	var err error
	joined := false
	if o.Shared {
		if pod, joined, err = s.sharedPod(ctx, spec); err != nil {
			return nil, err
		}
	} else if pod, err = cluster.CreateShadow(ctx, client, spec); err != nil {
		return nil, err
	}
	podName := pod.Name
	s.undo.Push("delete shadow pod "+o.Namespace+"/"+podName, func(ctx context.Context) error {
		if o.Shared && s.othersRemain() {
			return nil // the others keep it; the last one out deletes it
		}
		err := cluster.DeleteShadow(ctx, client, o.Namespace, podName)
		if o.Shared && err == nil { // the garbage collector would too, a moment later
			err = cluster.DeleteJoinSecret(ctx, client, o.Namespace, podName)
		}
		return err
	})
	if joined {
		s.others = 1 // until counted on Close: never delete what others may use
		fmt.Fprintf(o.Progress, "Joining shared shadow pod %s/%s\n", o.Namespace, podName)
	} else {
		fmt.Fprintf(o.Progress, "Created shadow pod %s/%s\n", o.Namespace, podName)
	}
	// The API server connection the port-forward will take is dialled while the pod starts.
	s.Dialer = s.dialer(pod)
	s.undo.Push("close port-forward", func(context.Context) error { return s.Dialer.Close() })
	s.Dialer.Warm(ctx)
	wait := progress.Start(o.Progress, "Waiting for shadow pod "+o.Namespace+"/"+podName+" to run")
	defer wait.Stop()
	return cluster.WaitRunning(ctx, client, o.Namespace, podName, o.Pod.PodCreationTimeout, false)
}

// startDeployment creates the shadow Deployment (with the identity its agent deletes it with)
// and waits for its pod.
func (s *Session) startDeployment(ctx context.Context, spec cluster.ShadowSpec) (*corev1.Pod, error) {
	o, client := s.opts, s.client
	tmpl, err := cluster.ShadowPod(spec)
	if err != nil {
		return nil, err
	}
	sd, err := cluster.CreateSelfDelete(ctx, client, o.Namespace, tmpl.Name, s.ID)
	if err != nil {
		return nil, fmt.Errorf("a shadow Deployment needs a ServiceAccount and Role to delete itself when you are gone: %w", err)
	}
	d, err := cluster.CreateShadowDeployment(ctx, client, tmpl)
	if err != nil {
		sd.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	s.deployment = d.Name
	s.undo.Push("delete shadow deployment "+o.Namespace+"/"+d.Name, func(ctx context.Context) error {
		return cluster.DeleteShadowDeployment(ctx, client, o.Namespace, d.Name, s.ID)
	})
	if err := sd.OwnByDeployment(ctx, d); err != nil {
		sd.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	fmt.Fprintf(o.Progress, "Created shadow deployment %s/%s\n", o.Namespace, d.Name)
	wait := progress.Start(o.Progress, "Waiting for a pod of shadow deployment "+o.Namespace+"/"+d.Name+" to run")
	defer wait.Stop()
	return cluster.WaitSessionPod(ctx, client, o.Namespace, s.ID, "", o.Pod.PodCreationTimeout)
}

// dialer is a port-forward to pod with the session's protocol and timeout.
func (s *Session) dialer(pod *corev1.Pod) *portforward.Dialer {
	d := portforward.NewDialer(s.config, s.client, s.opts.Namespace, pod.Name)
	d.Protocol, d.Timeout = s.opts.Protocol, s.opts.Pod.PortForwardTimeout
	return d
}

// Lost is closed when KeepForwarding finds the shadow pod gone.
func (s *Session) Lost() <-chan struct{} { return s.lost }

// PodGone reports whether the shadow pod is deleted, being deleted, or finished.
func (s *Session) PodGone(ctx context.Context) bool {
	gone, _ := PodGone(ctx, s.client, s.opts.Namespace, s.Pod.Name)
	return gone
}

// Deployment is the shadow Deployment's name, or "" for a bare shadow pod.
func (s *Session) Deployment() string { return s.deployment }

// NextPod waits for the shadow Deployment to replace a lost pod and returns a session on the
// new pod, which takes over this session's teardown; this one is left with nothing to undo
// but its own port-forward.
func (s *Session) NextPod(ctx context.Context) (*Session, error) {
	if s.deployment == "" {
		return nil, fmt.Errorf("the shadow is a bare pod: nothing replaces it")
	}
	pod, err := cluster.WaitSessionPod(ctx, s.client, s.opts.Namespace, s.ID, s.Pod.Name, s.opts.Pod.PodCreationTimeout)
	if err != nil {
		return nil, err
	}
	n := &Session{ID: s.ID, Pod: pod, opts: s.opts, client: s.client, signer: s.signer, own: s.own, deployment: s.deployment, config: s.config, lost: make(chan struct{}),
		proxyDials: rate.NewLimiter(proxyDialRate, proxyDialBurst)}
	n.Dialer = n.dialer(pod)
	if _, err := n.SSH(ctx); err != nil {
		n.Dialer.Close()
		return nil, err
	}
	// The teardown moves over: the new session deletes the Deployment; the old one closes only
	// its port-forward.
	n.undo.TakeFrom(&s.undo)
	old := s.Dialer
	s.undo.Push("close port-forward", func(context.Context) error { return old.Close() })
	if s.stopHeartbeat != nil {
		s.stopHeartbeat()
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.stopHeartbeat = cancel
	go n.heartbeat(hctx)
	n.undo.Push("close port-forward", func(context.Context) error { return n.Dialer.Close() })
	return n, nil
}

// Dial opens a connection to one of the agent's ports through the port-forward; a stream
// to a port that authenticates starts with the agent's secret (learnt over SSH, which this
// connects first if need be).
func (s *Session) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	if !wire.Authenticated(int(port)) {
		return s.Dialer.Dial(ctx, port)
	}
	secret := s.streamSecret()
	if secret == nil {
		c, err := s.SSH(ctx)
		if err != nil {
			return nil, err
		}
		secret = c.Secret
	}
	c, err := s.Dialer.Dial(ctx, port)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(wire.AppendAuth(nil, secret)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// streamSecret is what streams to authenticated ports open with: the client's own, else the
// agent's once an SSH login told it, else nil. It does not wait for a login on its way.
func (s *Session) streamSecret() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own != nil {
		return s.own
	}
	return s.secret
}

// SSH returns the SSH connection to the agent, (re)connecting when there is none. Right after
// the pod starts the agent may not listen yet, so connecting retries until the port-forward
// timeout.
func (s *Session) SSH(ctx context.Context) (*sshtunnel.Client, error) {
	s.sshMu.Lock()
	defer s.sshMu.Unlock()
	s.mu.Lock()
	c := s.ssh
	s.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	err := s.atSSHPort(ctx, "ssh to shadow not ready yet", func(conn net.Conn) (err error) {
		c, err = sshtunnel.Dial(ctx, conn, s.signer, s.opts.KeepAlive, &s.hostKey)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.ssh, s.secret = c, c.Secret
	s.mu.Unlock()
	return c, nil
}

// probe waits until the agent answers on its SSH port and checks that it is of this client's
// protocol, from the version string it sends first: one stream's opening, where a login takes
// the whole handshake. A wrong version fails at once.
func (s *Session) probe(ctx context.Context) error {
	var v string
	err := s.atSSHPort(ctx, "shadow agent not answering yet", func(conn net.Conn) (err error) {
		v, err = sshtunnel.ReadVersion(ctx, conn)
		conn.Close()
		return err
	})
	if err != nil {
		return err
	}
	return sshtunnel.CheckVersion(v)
}

// atSSHPort opens a stream to the agent's SSH port and hands it to use (which owns it), again
// until use succeeds: right after the pod starts the agent may not listen yet, so this retries
// until the port-forward timeout.
func (s *Session) atSSHPort(ctx context.Context, notYet string, use func(net.Conn) error) error {
	deadline := time.Now().Add(s.opts.Pod.PortForwardTimeout)
	var lastErr error
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		conn, err := s.Dialer.Dial(ctx, wire.SSHPort)
		if err == nil {
			if err = use(conn); err == nil {
				return nil
			}
		}
		lastErr = err
		klog.FromContext(ctx).V(2).Info(notYet, "err", err)
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	return fmt.Errorf("connect to the shadow agent in %s/%s: %w", s.opts.Namespace, s.Pod.Name, lastErr)
}

func (s *Session) heartbeat(ctx context.Context) {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := cluster.HeartbeatPod(ctx, s.client, s.opts.Namespace, s.Pod.Name); err != nil {
			klog.FromContext(ctx).V(2).Info("heartbeat", "err", err)
		}
	}
}

// Close tears everything down, newest first, with its own bounded context.
func (s *Session) Close() error {
	s.mu.Lock()
	for _, stop := range s.stopForwarding {
		stop()
	}
	s.mu.Unlock()
	if s.stopHeartbeat != nil {
		s.stopHeartbeat()
	}
	if s.opts.Shared && s.Dialer != nil {
		s.others = s.leaveShared()
	}
	s.sshMu.Lock() // a login on its way is closed too, once it is done
	s.mu.Lock()
	if s.ssh != nil {
		s.ssh.Close()
		s.ssh = nil
	}
	s.mu.Unlock()
	s.sshMu.Unlock()
	return s.undo.Run(30 * time.Second)
}

// Undo exposes the session's undo stack to commands that change more than the shadow.
func (s *Session) Undo() *undo.Stack { return &s.undo }

// Shadow is what exchange, mesh and preview use of a running session: *Session is one, and
// their unit tests have their own, on a fake clientset.
type Shadow interface {
	// ShadowPod is the shadow pod as it was when the session started.
	ShadowPod() *corev1.Pod
	// ServeForwards serves the remote forwards until ctx ends or the tunnel fails (see
	// (*Session).ServeForwards).
	ServeForwards(ctx context.Context, fwds []Forward, warn io.Writer, ready func()) error
	// KeepForwarding serves the forwards in the background and keeps them up (see
	// (*Session).KeepForwarding); Lost is closed when it finds the pod gone.
	KeepForwarding(ctx context.Context, fwds []Forward, warn io.Writer) error
	Lost() <-chan struct{}
	// DrainService waits until the Service svc no longer sends new connections to the
	// shadow (see Drain).
	DrainService(ctx context.Context, svc string)
	// Close tears the session down.
	Close() error
}

// Starter starts a session.
type Starter func(ctx context.Context, o Options) (Shadow, error)

// NewStarter returns the Starter of real sessions: Start through config and client.
func NewStarter(config *rest.Config, client kubernetes.Interface) Starter {
	return func(ctx context.Context, o Options) (Shadow, error) {
		s, err := Start(ctx, config, client, o)
		if err != nil {
			return nil, err // not a nil *Session in a non-nil Shadow
		}
		return s, nil
	}
}

// ShadowPod returns s.Pod.
func (s *Session) ShadowPod() *corev1.Pod { return s.Pod }

// DrainService is Drain for this session's pod.
func (s *Session) DrainService(ctx context.Context, svc string) {
	Drain(ctx, s.client, s.opts.Namespace, svc, s.Pod.Status.PodIP, s.Dialer)
}
