// Package mesh sends only the requests that carry a developer's header mark to that
// developer's machine; everyone else keeps using the cluster's pods. In auto mode a router
// (the agent in its router role) takes the Service's traffic and routes each request; several
// developers, each with their own mark, share one router, and the last one out restores the
// Service. In manual mode only a labelled shadow is started, for a service mesh to route to.
package mesh

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/progress"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/undo"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Modes.
const (
	ModeAuto   = "auto"
	ModeManual = "manual"
)

// Config configures Run.
type Config struct {
	RESTConfig       *rest.Config
	Client           kubernetes.Interface
	Namespace        string
	Target           string
	Expose           []target.Expose
	Mode             string
	Key, Value       string
	SkipPortChecking bool
	RouterImage      string
	Pod              *cluster.PodOptions
	Command          string
	ErrOut           io.Writer
	// Start starts a shadow's session; nil starts a real one through RESTConfig.
	Start session.Starter
	// Ready, when set, is called once the marked requests come to this machine.
	Ready func()
	// Router asks the mesh router; nil asks it through a port-forward.
	Router Router
	// Mirror joins as a mirror: a copy of the requests (only those with Key: Value when Key
	// is set, under PathPrefix when set) comes here; none is taken away.
	Mirror     bool
	PathPrefix string
	// PodProxy has the shadow's connections come back through the API server's pod proxy
	// when it lets this client (session.Options.PodProxy).
	PodProxy bool
}

// Router is what mesh asks of the mesh router pod.
type Router interface {
	// Routes lists the members the router routes to now.
	Routes(ctx context.Context, ns, pod string) ([]wire.MeshMember, error)
	// Drain waits until the Service svc no longer sends new connections to the router pod.
	Drain(ctx context.Context, ns, svc string, pod *corev1.Pod)
	// Mirrors counts the copies of each mirror, by session.
	Mirrors(ctx context.Context, ns, pod string) (map[string]wire.MirrorStats, error)
}

// portForwardRouter reaches the router's loopback endpoints (wire.HealthPort) through a
// port-forward.
type portForwardRouter struct {
	config *rest.Config
	client kubernetes.Interface
}

func (r portForwardRouter) Routes(ctx context.Context, ns, pod string) ([]wire.MeshMember, error) {
	var members []wire.MeshMember
	return members, r.get(ctx, ns, pod, "/routes", &members)
}

func (r portForwardRouter) Mirrors(ctx context.Context, ns, pod string) (map[string]wire.MirrorStats, error) {
	var stats map[string]wire.MirrorStats
	return stats, r.get(ctx, ns, pod, "/mirrors", &stats)
}

// get reads one of the router's loopback endpoints, at most 1 MiB of JSON.
func (r portForwardRouter) get(ctx context.Context, ns, pod, path string, v any) error {
	d := portforward.NewDialer(r.config, r.client, ns, pod)
	defer d.Close()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.Dial(ctx, wire.HealthPort) },
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://router"+path, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("router %s: %s", path, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

func (r portForwardRouter) Drain(ctx context.Context, ns, svc string, pod *corev1.Pod) {
	d := portforward.NewDialer(r.config, r.client, ns, pod.Name)
	defer d.Close()
	session.Drain(ctx, r.client, ns, svc, pod.Status.PodIP, d)
}

var keyRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
var valueRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseVersionMark parses --version-mark: VALUE, KEY:, or KEY:VALUE. The default key is
// "version" and the default value five random letters. KEY is a header name, so its case
// does not matter: it is kept in lower case, as HTTP/2 and gRPC metadata carry it.
func ParseVersionMark(s string) (key, value string, err error) {
	key, value = "version", ""
	if s != "" {
		if k, v, ok := strings.Cut(s, ":"); ok {
			if k != "" {
				key = strings.ToLower(k)
			}
			value = v
		} else {
			value = s
		}
	}
	if !keyRE.MatchString(key) {
		return "", "", fmt.Errorf("--version-mark %q: the header name %q must be a letter, then letters, digits, '_' or '-'", s, key)
	}
	if value == "" {
		b := make([]byte, 5)
		rand.Read(b)
		for i := range b {
			b[i] = 'a' + b[i]%26
		}
		value = string(b)
	}
	if !valueRE.MatchString(value) || len(value) > 63 {
		return "", "", fmt.Errorf("--version-mark %q: the value %q must be letters, digits, '.', '_' or '-' (at most 63)", s, value)
	}
	return key, value, nil
}

// Run meshes until ctx ends.
func Run(ctx context.Context, cfg Config) (err error) {
	pipe.OneProcessor()
	if cfg.Start == nil {
		cfg.Start = session.NewStarter(cfg.RESTConfig, cfg.Client)
	}
	if cfg.Router == nil {
		cfg.Router = portForwardRouter{cfg.RESTConfig, cfg.Client}
	}
	inventory.WarnStale(ctx, cfg.Client, cfg.Namespace, cfg.ErrOut)
	t, err := target.Resolve(ctx, cfg.Client, cfg.Namespace, cfg.Target)
	if err != nil {
		return err
	}
	if l, ok := wire.ServiceLock(t.Service); ok && l.Role != wire.RoleMesh && time.Since(l.Heartbeat) < cluster.StaleAfter {
		return &cluster.LockedError{Service: cfg.Namespace + "/" + t.Service.Name, Lock: *l}
	}
	ports, _, err := target.MapPorts(t.Service, t.Workload, cfg.Expose)
	if err != nil {
		return err
	}
	if !cfg.SkipPortChecking {
		if err := session.CheckLocal(target.Locals(ports)...); err != nil {
			return err
		}
	}
	if n, err := target.ReadyPods(ctx, cfg.Client, t.Service); err == nil && n == 0 {
		fmt.Fprintf(cfg.ErrOut, "note: service %s/%s has no ready pod: %s until one is ready\n", cfg.Namespace, t.Service.Name, noPodFails(cfg.Mirror))
	}
	m := &mesher{cfg: cfg, ns: cfg.Namespace, svc: t.Service, ports: ports, session: wire.NewSession()}
	var undo undo.Stack
	defer func() {
		if uerr := undo.Run(60 * time.Second); uerr != nil {
			err = errors.Join(err, fmt.Errorf("restore: %w; run 'kubectl kt clean'", uerr))
		} else if err == nil {
			fmt.Fprintln(cfg.ErrOut, m.goodbye)
		}
	}()
	if cfg.Mode == ModeManual {
		return m.manual(ctx, &undo)
	}
	return m.auto(ctx, &undo)
}

// noPodFails says what fails while the Service has no ready pod to answer.
func noPodFails(mirror bool) string {
	if mirror {
		return "its requests fail (the router answers HTTP with 502 Bad Gateway) and none is copied"
	}
	return "requests without the header fail (the router answers HTTP with 502 Bad Gateway)"
}

type mesher struct {
	cfg     Config
	ns      string
	svc     *corev1.Service
	ports   []target.PortMap
	session string
	goodbye string
	// fallback is where this developer's shadow sends marked requests while this client is
	// away: the mesh's origin Service, on the shadow's port numbers.
	fallback map[int]string
	// said is shared by this developer's shadow and those that replace it.
	said session.Said
}

// findFallback points the shadow's ports at the mesh's origin Service.
func (m *mesher) findFallback(ctx context.Context) {
	if m.cfg.Pod.FallbackAfter <= 0 {
		return
	}
	svc, err := m.cfg.Client.CoreV1().Services(m.ns).Get(ctx, m.svc.Name, metav1.GetOptions{})
	if err != nil {
		return
	}
	st, ok := wire.GetMesh(svc)
	if !ok {
		return
	}
	osvc, err := m.cfg.Client.CoreV1().Services(m.ns).Get(ctx, st.Origin, metav1.GetOptions{})
	if err != nil || osvc.Spec.ClusterIP == "" || osvc.Spec.ClusterIP == corev1.ClusterIPNone {
		klog.FromContext(ctx).V(1).Info("no origin Service to fall back to", "origin", st.Origin, "err", err)
		return
	}
	m.fallback = map[int]string{}
	for _, p := range m.ports {
		m.fallback[int(p.Target)] = net.JoinHostPort(osvc.Spec.ClusterIP, strconv.Itoa(int(p.Target)))
	}
}

// mirrorLinger is how long a mirror's forwards gather the local server's answers before they
// go back: the router sends copies pipelined, dozens in a batch, and their answers, which it
// reads and drops, then go back in a piece or two per batch rather than one per copy.
const mirrorLinger = 10 * time.Millisecond

func (m *mesher) forwards() ([]session.Forward, []corev1.ContainerPort) {
	var fwds []session.Forward
	var cps []corev1.ContainerPort
	for _, p := range m.ports {
		f := session.Forward{Remote: int(p.Target), Local: session.LocalAddr(p.Local), Port: int(p.ServicePort)}
		if m.cfg.Mirror {
			f.Linger = mirrorLinger
		}
		fwds = append(fwds, f)
		cps = append(cps, corev1.ContainerPort{ContainerPort: p.Target, Name: p.Name})
	}
	return fwds, cps
}

// shadow starts this developer's shadow and serves its forwards in the background. The first
// one is named for the session, a replacement for an id of its own.
func (m *mesher) shadow(ctx context.Context, undo *undo.Stack, id string, labels map[string]string, owner *metav1.OwnerReference) (session.Shadow, error) {
	fwds, cps := m.forwards()
	what := "mesh"
	if m.cfg.Mirror {
		what = "mirror"
	}
	sess, err := m.cfg.Start(ctx, session.Options{
		ID: id, Namespace: m.ns, Role: wire.RoleMesh, What: what, Command: m.cfg.Command, Pod: m.cfg.Pod,
		Progress: m.cfg.ErrOut, ForwardPorts: cps, Labels: labels, OwnerRef: owner, Fallback: m.fallback,
		PodProxy: m.cfg.PodProxy, Said: &m.said,
	})
	if err != nil {
		return nil, err
	}
	undo.Push("delete shadow "+sess.ShadowPod().Name, func(context.Context) error { return sess.Close() })
	if err := sess.KeepForwarding(ctx, fwds, m.cfg.ErrOut); err != nil {
		return nil, err
	}
	return sess, nil
}

// replace starts a shadow in place of lost, retrying until one runs or ctx ends.
func (m *mesher) replace(ctx context.Context, undo *undo.Stack, lost session.Shadow, labels map[string]string, owner *metav1.OwnerReference) (session.Shadow, error) {
	return session.Replace(ctx, m.cfg.ErrOut, lost.ShadowPod().Name, func() (session.Shadow, error) {
		return m.shadow(ctx, undo, wire.NewSession(), labels, owner)
	})
}

// manual starts a shadow that carries the workload's labels plus KEY=VALUE, for a service
// mesh's routing rules to select; the Service is not changed.
func (m *mesher) manual(ctx context.Context, undo *undo.Stack) error {
	labels := map[string]string{m.cfg.Key: m.cfg.Value}
	for k, v := range m.svc.Spec.Selector {
		labels[k] = v
	}
	owner := &metav1.OwnerReference{APIVersion: "v1", Kind: "Service", Name: m.svc.Name, UID: m.svc.UID, Controller: ptr.To(true)}
	sess, err := m.shadow(ctx, undo, m.session, labels, owner)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.cfg.ErrOut, "Shadow %s/%s carries the labels of service %s plus %s=%s; route to pods labelled %s=%s with your service mesh (e.g. an Istio DestinationRule subset). Ctrl-C to stop.\n",
		m.ns, sess.ShadowPod().Name, m.svc.Name, m.cfg.Key, m.cfg.Value, m.cfg.Key, m.cfg.Value)
	m.goodbye = "Deleted the shadow"
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Lost():
			// The replacement carries the same labels: the mesh's rules select it unchanged.
			if sess, err = m.replace(ctx, undo, sess, labels, owner); err != nil {
				return nil // ctx ended
			}
			fmt.Fprintf(m.cfg.ErrOut, "Shadow %s/%s took over, with the same labels\n", m.ns, sess.ShadowPod().Name)
		}
	}
}

// copied says which requests a mirror copies.
func (m *mesher) copied() string {
	s := "every request"
	if m.cfg.Key != "" {
		s += fmt.Sprintf(" with header '%s: %s'", m.cfg.Key, m.cfg.Value)
	}
	if m.cfg.PathPrefix != "" {
		s += " under " + m.cfg.PathPrefix
	}
	return s
}

// comesAgain says what comes to this machine again through a shadow that took over.
func (m *mesher) comesAgain() string {
	if m.cfg.Mirror {
		return "a copy of " + m.copied() + " comes here again"
	}
	return fmt.Sprintf("requests with header '%s: %s' come here again", m.cfg.Key, m.cfg.Value)
}

// readCopies reads this mirror's counts from the router into member; they stay as they were
// when the router does not answer.
func (m *mesher) readCopies(ctx context.Context, member *wire.MeshMember) {
	svc, err := m.cfg.Client.CoreV1().Services(m.ns).Get(ctx, m.svc.Name, metav1.GetOptions{})
	if err != nil {
		return
	}
	st, ok := wire.GetMesh(svc)
	if !ok {
		return
	}
	stats, err := m.cfg.Router.Mirrors(ctx, m.ns, st.Router)
	if s, ok := stats[m.session]; err == nil && ok {
		member.Sent, member.Dropped = s.Sent, s.Dropped
	}
}

// announce waits until the router routes this member's mark here, and says so.
func (m *mesher) announce(ctx context.Context) error {
	what := "'" + m.cfg.Key + ": " + m.cfg.Value + "'"
	if m.cfg.Mirror {
		what = "a copy of " + m.copied()
	}
	wait := progress.Start(m.cfg.ErrOut, "Waiting for the router to route "+what+" here")
	err := m.waitRouted(ctx)
	wait.Stop()
	if err != nil {
		return err
	}
	if m.cfg.Mirror {
		fmt.Fprintf(m.cfg.ErrOut, "Mirroring service %s/%s: a copy of %s comes to this machine (%s), its answers dropped; the original pods answer every request. Ctrl-C to stop.\n",
			m.ns, m.svc.Name, m.copied(), describe(m.ports))
		fmt.Fprintln(m.cfg.ErrOut, "note: TLS connections cannot be read; the router passes them through uncopied")
	} else {
		fmt.Fprintf(m.cfg.ErrOut, "Meshed service %s/%s: requests with header '%s: %s' go to this machine (%s); all others go to the original pods. Ctrl-C to stop.\n",
			m.ns, m.svc.Name, m.cfg.Key, m.cfg.Value, describe(m.ports))
		fmt.Fprintln(m.cfg.ErrOut, "note: TLS connections cannot be routed by header; the router passes them through to the original pods")
	}
	if m.cfg.Ready != nil {
		m.cfg.Ready()
	}
	return nil
}

func (m *mesher) auto(ctx context.Context, undo *undo.Stack) error {
	created, err := m.join(ctx, undo)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(m.cfg.ErrOut, "Started mesh router for service %s/%s\n", m.ns, m.svc.Name)
	}
	if !m.cfg.Mirror { // a copy must never reach the original pods: a mirror has no fallback
		m.findFallback(ctx)
	}
	sess, err := m.shadow(ctx, undo, m.session, nil, nil)
	if err != nil {
		return err
	}
	member := wire.MeshMember{Owner: wire.Owner(), Session: m.session, Key: m.cfg.Key, Value: m.cfg.Value, Shadow: sess.ShadowPod().Status.PodIP, Heartbeat: time.Now().UTC(),
		Mirror: m.cfg.Mirror, PathPrefix: m.cfg.PathPrefix}
	if err := m.update(ctx, func(st *wire.MeshState) error {
		for _, o := range st.Live(cluster.StaleAfter) {
			if !member.Mirror && !o.Mirror && strings.EqualFold(o.Key, member.Key) && o.Value == member.Value && o.Session != m.session {
				return fmt.Errorf("the mark %s: %s is already used by %s on service %s; choose another --version-mark", o.Key, o.Value, o.Owner, m.svc.Name)
			}
		}
		st.Members = append(st.Members, member)
		return nil
	}); err != nil {
		return err
	}
	// Pushed last, so it runs first on exit: leave, and restore everything if nobody is left.
	undo.Push("leave the mesh of "+m.svc.Name, func(ctx context.Context) error { return m.leave(ctx) })
	if err := m.announce(ctx); err != nil {
		return err
	}
	// beat refreshes this member's heartbeat and shadow address; a member dropped while we
	// were unreachable joins again.
	beat := func() error {
		if m.cfg.Mirror {
			m.readCopies(ctx, &member)
		}
		return m.update(ctx, func(st *wire.MeshState) error {
			member.Shadow, member.Heartbeat = sess.ShadowPod().Status.PodIP, time.Now().UTC()
			for i := range st.Members {
				if st.Members[i].Session == m.session {
					st.Members[i].Shadow, st.Members[i].Heartbeat = member.Shadow, member.Heartbeat
					st.Members[i].Sent, st.Members[i].Dropped = member.Sent, member.Dropped
					return nil
				}
			}
			st.Members = append(st.Members, member)
			return nil
		})
	}
	locks := &session.LockWatch{W: m.cfg.ErrOut, What: "mesh of service " + m.ns + "/" + m.svc.Name}
	hb := time.NewTicker(10 * time.Second)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Lost():
			// The mesh may have ended meanwhile (every developer gone, the router restored
			// the Service): then a new shadow would serve nobody.
			if err := m.update(ctx, func(*wire.MeshState) error { return nil }); errors.Is(err, cluster.ErrLockLost) {
				return fmt.Errorf("the mesh of service %s/%s ended while this machine was away: %w; start it again", m.ns, m.svc.Name, err)
			}
			if sess, err = m.replace(ctx, undo, sess, nil, nil); err != nil {
				return nil // ctx ended
			}
			if err := beat(); err != nil {
				if ctx.Err() == nil {
					fmt.Fprintf(m.cfg.ErrOut, "warning: route to the new shadow: %v (tried again with the next heartbeat)\n", err)
				}
				continue
			}
			fmt.Fprintf(m.cfg.ErrOut, "Shadow %s/%s took over: %s\n", m.ns, sess.ShadowPod().Name, m.comesAgain())
		case <-hb.C:
			err := beat()
			if ctx.Err() != nil {
				return nil
			}
			if err := locks.Observe(err); err != nil {
				return err
			}
		}
	}
}

func describe(ports []target.PortMap) string {
	var s []string
	for _, p := range ports {
		s = append(s, fmt.Sprintf("%d→localhost:%d", p.ServicePort, p.Local))
	}
	return strings.Join(s, ", ")
}

// update changes the mesh state of the Service, keeping the lock's heartbeat fresh.
func (m *mesher) update(ctx context.Context, f func(*wire.MeshState) error) error {
	_, err := cluster.UpdateService(ctx, m.cfg.Client, m.ns, m.svc.Name, func(s *corev1.Service) (bool, error) {
		st, ok := wire.GetMesh(s)
		if !ok {
			return false, fmt.Errorf("service %s/%s is no longer meshed (it was restored): %w", m.ns, m.svc.Name, cluster.ErrLockLost)
		}
		if err := f(st); err != nil {
			return false, err
		}
		wire.SetMesh(s, st)
		if l, ok := wire.ServiceLock(s); ok {
			l.Heartbeat = time.Now().UTC()
			wire.SetServiceLock(s, *l)
		}
		return true, nil
	})
	return err
}

// join takes the Service's mesh lock, or joins a live mesh. The first developer creates the
// origin Service and the router and switches the Service to the router.
func (m *mesher) join(ctx context.Context, undo *undo.Stack) (created bool, err error) {
	meshID := wire.NewSession()
	routerName := wire.ShadowName(wire.RoleRouter, meshID)
	origin := originName(m.svc.Name, meshID)
	var targets []int32
	for _, p := range m.svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			targets = append(targets, m.targetOf(p))
		}
	}
	now := time.Now().UTC()
	_, err = cluster.UpdateService(ctx, m.cfg.Client, m.ns, m.svc.Name, func(s *corev1.Service) (bool, error) {
		created = false
		l, locked := wire.ServiceLock(s)
		if locked && time.Since(l.Heartbeat) < cluster.StaleAfter {
			if l.Role != wire.RoleMesh {
				return false, &cluster.LockedError{Service: m.ns + "/" + s.Name, Lock: *l}
			}
			if _, ok := wire.GetMesh(s); ok {
				return false, nil // a live mesh: join it
			}
		}
		if locked {
			if _, err := wire.RestoreService(s, ""); err != nil { // a stale lock: take over
				return false, err
			}
		}
		created = true
		wire.SetServiceLock(s, wire.Lock{Owner: wire.Owner(), Session: meshID, Role: wire.RoleMesh, Command: m.cfg.Command, Since: now, Heartbeat: now})
		wire.SetMesh(s, &wire.MeshState{Router: routerName, Origin: origin, Ports: targets})
		return true, nil
	})
	if err != nil || !created {
		return created, err
	}
	return true, m.startRouter(ctx, meshID, routerName, origin)
}

// startRouter makes the mesh a new lock created: the origin Service, the router (with the
// identity it restores the Service with when everyone is gone), and the switch of the
// Service to the router. On failure it undoes all of it, the lock included.
func (m *mesher) startRouter(ctx context.Context, meshID, routerName, origin string) error {
	fail := func(err error) error {
		ctx := context.WithoutCancel(ctx)
		cluster.RestoreService(ctx, m.cfg.Client, m.ns, m.svc.Name, meshID)
		cluster.DeleteService(ctx, m.cfg.Client, m.ns, origin)
		cluster.DeleteShadow(ctx, m.cfg.Client, m.ns, routerName)
		return err
	}
	var ops []corev1.ServicePort
	for _, p := range m.svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			ops = append(ops, corev1.ServicePort{Name: p.Name, Port: m.targetOf(p), TargetPort: p.TargetPort})
		}
	}
	osvc, err := cluster.CreateOriginService(ctx, m.cfg.Client, m.ns, origin, meshID, m.svc.Spec.Selector, ops)
	if err != nil {
		return fail(err)
	}
	sr, err := cluster.CreateSelfRestore(ctx, m.cfg.Client, m.ns, routerName, m.svc.Name, meshID, origin)
	if err != nil {
		return fail(fmt.Errorf("the mesh router needs a ServiceAccount and Role to restore the Service when everyone is gone: %w", err))
	}
	var ps []string
	var cps []corev1.ContainerPort
	for _, p := range m.svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			t := m.targetOf(p)
			ps = append(ps, strconv.Itoa(int(t)))
			name := ""
			if p.TargetPort.Type == intstr.String {
				name = p.TargetPort.StrVal
			}
			cps = append(cps, corev1.ContainerPort{ContainerPort: t, Name: name})
		}
	}
	opts := *m.cfg.Pod
	if m.cfg.RouterImage != "" {
		opts.Image = m.cfg.RouterImage
	}
	pod, err := cluster.CreateShadow(ctx, m.cfg.Client, cluster.ShadowSpec{
		Namespace: m.ns, Role: wire.RoleRouter, Session: meshID, Owner: wire.Owner(), Command: m.cfg.Command,
		ForwardPorts: cps, Labels: map[string]string{wire.ExchangeLabel: meshID}, Opts: &opts,
		RestoreService: m.ns + "/" + m.svc.Name, RestoreSession: meshID, ServiceAccount: sr.Name,
		Args: []string{"--router", "--service=" + m.ns + "/" + m.svc.Name, "--origin=" + origin, "--origin-ip=" + osvc.Spec.ClusterIP, "--ports=" + strings.Join(ps, ","),
			fmt.Sprintf("--member-expiry=%s", m.cfg.Pod.ExpireAfter)},
	})
	if err != nil {
		sr.Delete(ctx)
		return fail(err)
	}
	sr.OwnBy(ctx, pod)
	wait := progress.Start(m.cfg.ErrOut, "Waiting for mesh router "+m.ns+"/"+routerName+" to be ready")
	rp, err := cluster.WaitRunning(ctx, m.cfg.Client, m.ns, routerName, m.cfg.Pod.PodCreationTimeout, true)
	wait.Stop()
	if err != nil {
		return fail(err)
	}
	if err := cluster.RedirectService(ctx, m.cfg.Client, m.ns, m.svc.Name, meshID, map[string]string{wire.ExchangeLabel: meshID}); err != nil {
		return fail(err)
	}
	wait = progress.Start(m.cfg.ErrOut, "Waiting for service "+m.ns+"/"+m.svc.Name+" to send its traffic to the router")
	err = cluster.WaitEndpoints(ctx, m.cfg.Client, m.ns, m.svc.Name, []string{rp.Status.PodIP}, 60*time.Second)
	wait.Stop()
	if err != nil {
		return fail(err)
	}
	return nil
}

func (m *mesher) targetOf(p corev1.ServicePort) int32 {
	for _, pm := range m.ports {
		if pm.ServicePort == p.Port {
			return pm.Target
		}
	}
	if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0 {
		return p.TargetPort.IntVal
	}
	return p.Port
}

func originName(svc, id string) string { return cluster.OriginName(svc, id) }

// leave removes this developer; the last one out restores the Service and removes the router
// and the origin Service.
func (m *mesher) leave(ctx context.Context) error {
	var last *wire.MeshState
	svc, err := cluster.UpdateService(ctx, m.cfg.Client, m.ns, m.svc.Name, func(s *corev1.Service) (bool, error) {
		st, ok := wire.GetMesh(s)
		if !ok {
			return false, nil
		}
		var keep []wire.MeshMember
		for _, mm := range st.Live(cluster.StaleAfter) {
			if mm.Session != m.session {
				keep = append(keep, mm)
			}
		}
		st.Members = keep
		if len(keep) > 0 {
			wire.SetMesh(s, st)
			left := "Left the mesh of"
			if m.cfg.Mirror {
				left = "Stopped mirroring"
			}
			m.goodbye = fmt.Sprintf("%s service %s/%s; %d other session(s) still mesh or mirror it", left, m.ns, m.svc.Name, len(keep))
			return true, nil
		}
		last = st
		r, err := wire.RestoreService(s, "")
		if r.Kept {
			m.goodbye = r.KeptNote(m.ns, m.svc.Name)
		}
		return true, err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if last == nil {
		// The others stay: this shadow goes once the router no longer sends marked requests
		// to it (it reads the Service every second); until then they are still served here.
		if st, ok := wire.GetMesh(svc); ok {
			m.waitRoute(ctx, st.Router, false, 10*time.Second)
		}
		return nil
	}
	m.goodbye = fmt.Sprintf("Restored service %s/%s (the last developer left the mesh) and removed its router", m.ns, m.svc.Name)
	if rp, err := m.cfg.Client.CoreV1().Pods(m.ns).Get(ctx, last.Router, metav1.GetOptions{}); err == nil {
		m.cfg.Router.Drain(ctx, m.ns, m.svc.Name, rp)
	}
	// The router sends unmarked requests to the origin Service until it is gone: it goes first.
	errs := []error{cluster.DeleteShadow(ctx, m.cfg.Client, m.ns, last.Router)}
	// Its identity goes too, now: the garbage collector would, but it can lag minutes behind
	// after an API server restart.
	if err := cluster.DeleteIdentity(ctx, m.cfg.Client, m.ns, last.Router); err != nil {
		errs = append(errs, err)
	}
	if err := cluster.DeleteService(ctx, m.cfg.Client, m.ns, last.Origin); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitRouted waits until the router lists this developer's route, so that the first marked
// request after "Meshed" already reaches this machine.
func (m *mesher) waitRouted(ctx context.Context) error {
	svc, err := m.cfg.Client.CoreV1().Services(m.ns).Get(ctx, m.svc.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	st, ok := wire.GetMesh(svc)
	if !ok {
		return fmt.Errorf("service %s/%s is no longer meshed", m.ns, m.svc.Name)
	}
	ok, err = m.waitRoute(ctx, st.Router, true, 30*time.Second)
	if !ok && ctx.Err() == nil {
		return fmt.Errorf("the mesh router %s does not route this session after 30s (last error: %v); see 'kubectl -n %s logs %s'", st.Router, err, m.ns, st.Router)
	}
	return ctx.Err()
}

// waitRoute waits until the router's routes include this session (want) or no longer do,
// for at most timeout; it reports whether they did, and the last error asking.
func (m *mesher) waitRoute(ctx context.Context, router string, want bool, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		members, err := m.cfg.Router.Routes(ctx, m.ns, router)
		if err == nil {
			routed := slices.ContainsFunc(members, func(mm wire.MeshMember) bool { return mm.Session == m.session })
			if routed == want {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
