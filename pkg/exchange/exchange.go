package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/progress"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/undo"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Modes.
const (
	ModeSelector  = "selector"
	ModeScale     = "scale"
	ModeEphemeral = "ephemeral"
)

// Config configures Run.
type Config struct {
	RESTConfig       *rest.Config
	Client           kubernetes.Interface
	Namespace        string
	Target           string
	Expose           []target.Expose
	Mode             string
	SkipPortChecking bool
	RecoverWaitTime  time.Duration
	Pod              *cluster.PodOptions
	Command          string
	ErrOut           io.Writer
	// Start starts the shadow's session; nil starts a real one through RESTConfig.
	Start session.Starter
	// Ready, when set, is called once the Service's traffic goes to this machine.
	Ready func()
}

// Run exchanges until ctx ends, then restores the Service (first) and deletes the shadow.
func Run(ctx context.Context, cfg Config) (err error) {
	pipe.OneProcessor()
	if cfg.Start == nil {
		cfg.Start = session.NewStarter(cfg.RESTConfig, cfg.Client)
	}
	inventory.WarnStale(ctx, cfg.Client, cfg.Namespace, cfg.ErrOut)
	t, ports, err := plan(ctx, cfg)
	if err != nil {
		return err
	}
	var undo undo.Stack
	x, err := lock(ctx, cfg, t.Service.Name, ports, &undo)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := undo.Run(cfg.RecoverWaitTime + 30*time.Second); uerr != nil {
			err = errors.Join(err, fmt.Errorf("restore: %w; run 'kubectl kt recover %s'", uerr, x.svc.Name))
		} else if err == nil {
			fmt.Fprintf(cfg.ErrOut, "Restored service %s/%s and deleted the shadow\n", x.ns, x.svc.Name)
		}
	}()
	if err := x.makeOrigin(ctx, &undo); err != nil {
		return err
	}
	if _, err := x.newShadow(ctx, &undo); err != nil {
		return err
	}
	serveErr, err := x.startServing(ctx, &undo)
	if err != nil || ctx.Err() != nil {
		return err
	}
	if err := x.switchTraffic(ctx, t.Workload, &undo); err != nil {
		return err
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}
	return x.keep(ctx, serveErr)
}

// plan resolves the target and its ports and checks everything that can be checked before
// the cluster is changed.
func plan(ctx context.Context, cfg Config) (*target.Target, []target.PortMap, error) {
	t, err := target.Resolve(ctx, cfg.Client, cfg.Namespace, cfg.Target)
	if err != nil {
		return nil, nil, err
	}
	if l, ok := wire.ServiceLock(t.Service); ok && time.Since(l.Heartbeat) < cluster.StaleAfter {
		return nil, nil, &cluster.LockedError{Service: cfg.Namespace + "/" + t.Service.Name, Lock: *l}
	}
	ports, warnings, err := target.MapPorts(t.Service, t.Workload, cfg.Expose)
	if err != nil {
		return nil, nil, err
	}
	if !cfg.SkipPortChecking {
		if err := session.CheckLocal(target.Locals(ports)...); err != nil {
			return nil, nil, err
		}
	}
	if cfg.Mode == ModeScale && t.Workload == nil {
		return nil, nil, fmt.Errorf("--mode scale: no single Deployment or StatefulSet runs the pods of service %s; use --mode selector", t.Service.Name)
	}
	for _, w := range warnings {
		fmt.Fprintf(cfg.ErrOut, "warning: %s\n", w)
	}
	return t, ports, nil
}

// lock takes the Service's lock (over a stale one) and pushes its release.
func lock(ctx context.Context, cfg Config, svcName string, ports []target.PortMap, undo *undo.Stack) (*exchanger, error) {
	ns := cfg.Namespace
	lockID := wire.NewSession()
	now := time.Now().UTC()
	prev, svc, err := cluster.LockService(ctx, cfg.Client, ns, svcName, wire.Lock{
		Owner: wire.Owner(), Session: lockID, Role: wire.RoleExchange, Command: cfg.Command, Since: now, Heartbeat: now})
	if err != nil {
		return nil, err
	}
	if prev != nil {
		fmt.Fprintf(cfg.ErrOut, "Took over service %s/%s from %s, whose session stopped sending heartbeats at %s\n", ns, svcName, prev.Owner, prev.Heartbeat.Local().Format("15:04:05"))
	}
	undo.Push("unlock service "+svcName, func(ctx context.Context) error {
		_, err := cluster.RestoreService(ctx, cfg.Client, ns, svcName, lockID)
		return err
	})
	return &exchanger{cfg: cfg, ns: ns, svc: svc, ports: ports, lockID: lockID}, nil
}

// startServing serves the forwards and waits until they listen. The forwards outlive ctx: at
// the end they serve until the Service is restored and kube-proxy has followed (the undo
// steps pushed after this one run before it), so no connection that still comes here is
// refused. It returns the serving's error channel, and nil if ctx ended first.
func (x *exchanger) startServing(ctx context.Context, undo *undo.Stack) (<-chan error, error) {
	var fwds []session.Forward
	for _, p := range x.ports {
		fwds = append(fwds, session.Forward{Remote: int(p.Target), Local: session.LocalAddr(p.Local), Port: int(p.ServicePort)})
	}
	readyc := make(chan struct{})
	var once sync.Once
	serveErr := make(chan error, 1)
	served := make(chan struct{})
	sctx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(served)
		serveErr <- x.serve(sctx, fwds, func() { once.Do(func() { close(readyc) }) })
	}()
	undo.Push("stop serving the forwards", func(ctx context.Context) error {
		stopServing()
		select {
		case <-served:
		case <-ctx.Done():
		}
		return nil
	})
	select {
	case <-readyc:
		return serveErr, nil
	case err := <-serveErr:
		return nil, err
	case <-ctx.Done():
		return nil, nil
	}
}

// switchTraffic sends the Service's traffic to the shadow once it is Ready (its probe passes
// when the forwards listen): by its selector, or in scale mode by scaling the workload to
// zero. It pushes the inverse and waits until the Service's endpoints are the shadow.
func (x *exchanger) switchTraffic(ctx context.Context, w *target.Workload, undo *undo.Stack) error {
	cfg, ns, svcName := x.cfg, x.ns, x.svc.Name
	wait := progress.Start(cfg.ErrOut, "Waiting for the shadow to be ready")
	readyPod, err := cluster.WaitRunning(ctx, cfg.Client, ns, x.current().ShadowPod().Name, cfg.Pod.PodCreationTimeout, true)
	wait.Stop()
	if err != nil {
		return err
	}
	switch cfg.Mode {
	case ModeScale:
		if err := x.scaleDown(ctx, w, undo); err != nil {
			return err
		}
	default:
		if err := cluster.RedirectService(ctx, cfg.Client, ns, svcName, x.lockID, map[string]string{wire.ExchangeLabel: x.lockID}); err != nil {
			return err
		}
		undo.Push("restore service "+svcName, func(ctx context.Context) error {
			r, err := cluster.RestoreService(ctx, cfg.Client, ns, svcName, x.lockID)
			if r.Kept {
				fmt.Fprintln(cfg.ErrOut, r.KeptNote(ns, svcName))
			}
			if err == nil { // then delete the shadow only once no new connection goes to it
				x.current().DrainService(ctx, svcName)
			}
			return err
		})
	}
	wait = progress.Start(cfg.ErrOut, "Waiting for service "+ns+"/"+svcName+" to send its traffic to the shadow")
	err = cluster.WaitEndpoints(ctx, cfg.Client, ns, svcName, []string{readyPod.Status.PodIP}, 60*time.Second)
	wait.Stop()
	if err != nil {
		return err
	}
	var desc []string
	for _, p := range x.ports {
		desc = append(desc, fmt.Sprintf("%d→localhost:%d", p.ServicePort, p.Local))
	}
	// The Service's endpoints are the shadow now; each node's kube-proxy follows within about
	// a second (its sync period), which cannot be observed from here.
	fmt.Fprintf(cfg.ErrOut, "Exchanged service %s/%s (%s mode): its traffic now goes to this machine (%s). Ctrl-C to restore.\n", ns, svcName, modeName(cfg.Mode), strings.Join(desc, ", "))
	return nil
}

// keep refreshes the lock's heartbeat until ctx ends or serving fails.
func (x *exchanger) keep(ctx context.Context, serveErr <-chan error) error {
	apiDown := &session.LockWatch{W: x.cfg.ErrOut, What: "exchange of service " + x.ns + "/" + x.svc.Name}
	hb := time.NewTicker(HeartbeatInterval)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			return err
		case <-hb.C:
			err := cluster.HeartbeatService(ctx, x.cfg.Client, x.ns, x.svc.Name, x.lockID)
			if ctx.Err() != nil {
				return nil
			}
			if err := apiDown.Observe(err); err != nil {
				return err
			}
		}
	}
}

// HeartbeatInterval is how often an exchange refreshes its Service lock's heartbeat.
var HeartbeatInterval = 15 * time.Second

func modeName(m string) string {
	if m == "" {
		return ModeSelector
	}
	return m
}

type exchanger struct {
	cfg    Config
	ns     string
	svc    *corev1.Service
	ports  []target.PortMap
	lockID string

	// origin is the Service that selects the original pods, and fallback where the shadow
	// sends each forwarded port's traffic through it while this client is away (selector
	// mode; scale mode has no pods to fall back to).
	origin   string
	fallback map[int]string

	mu   sync.Mutex
	sess session.Shadow
}

// makeOrigin creates the origin Service the shadow falls back to while this client is away,
// and pushes its deletion (after the Service's restore, which is pushed later).
func (x *exchanger) makeOrigin(ctx context.Context, undo *undo.Stack) error {
	if x.cfg.Mode == ModeScale || x.cfg.Pod.FallbackAfter <= 0 {
		return nil
	}
	var ops []corev1.ServicePort
	for _, pm := range x.ports {
		for _, sp := range x.svc.Spec.Ports {
			if sp.Port == pm.ServicePort && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
				ops = append(ops, corev1.ServicePort{Name: sp.Name, Port: pm.Target, TargetPort: sp.TargetPort})
			}
		}
	}
	if len(ops) == 0 {
		return nil
	}
	name := cluster.OriginName(x.svc.Name, x.lockID)
	osvc, err := cluster.CreateOriginService(ctx, x.cfg.Client, x.ns, name, x.lockID, x.svc.Spec.Selector, ops)
	if err != nil {
		return fmt.Errorf("the shadow needs a Service of the original pods to send the traffic back to while this machine is away (or pass --fallback-after 0): %w", err)
	}
	undo.Push("delete the origin service "+name, func(ctx context.Context) error { return cluster.DeleteService(ctx, x.cfg.Client, x.ns, name) })
	x.origin, x.fallback = name, map[int]string{}
	for _, p := range ops {
		x.fallback[int(p.Port)] = net.JoinHostPort(osvc.Spec.ClusterIP, strconv.Itoa(int(p.Port)))
	}
	return nil
}

func (x *exchanger) current() session.Shadow {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.sess
}

// newShadow starts a shadow for this exchange (also as the replacement of a lost one). In
// selector mode it gets the identity to restore the Service itself after a crashed client.
func (x *exchanger) newShadow(ctx context.Context, undo *undo.Stack) (session.Shadow, error) {
	id := wire.NewSession()
	podName := wire.ShadowName(wire.RoleExchange, id)
	labels := map[string]string{wire.ExchangeLabel: x.lockID}
	opts := session.Options{
		ID: id, Namespace: x.ns, Role: wire.RoleExchange, Command: x.cfg.Command, Pod: x.cfg.Pod,
		Progress: x.cfg.ErrOut, Labels: labels,
	}
	for _, p := range x.ports {
		opts.ForwardPorts = append(opts.ForwardPorts, corev1.ContainerPort{ContainerPort: p.Target, Name: p.Name})
	}
	var sr *cluster.SelfRestore
	if x.cfg.Mode == ModeScale {
		// The shadow carries the workload's labels, so the Service selects it unchanged; a
		// controller reference keeps any workload controller from adopting it.
		for k, v := range x.svc.Spec.Selector {
			labels[k] = v
		}
		opts.OwnerRef = &metav1.OwnerReference{APIVersion: "v1", Kind: "Service", Name: x.svc.Name, UID: x.svc.UID, Controller: ptr.To(true)}
	} else {
		var err error
		// Before the Service is switched: without it a client that dies leaves the Service
		// pointing at a dead end until someone runs clean.
		var deletable []string
		if x.origin != "" {
			deletable = append(deletable, x.origin)
		}
		sr, err = cluster.CreateSelfRestore(ctx, x.cfg.Client, x.ns, podName, x.svc.Name, x.lockID, deletable...)
		if err != nil {
			return nil, fmt.Errorf("the shadow needs a ServiceAccount, Role and RoleBinding to restore the Service by itself if this client dies: %w", err)
		}
		opts.ServiceAccount = sr.Name
		opts.RestoreService = x.ns + "/" + x.svc.Name
		opts.RestoreSession = x.lockID
		opts.Fallback, opts.OriginService = x.fallback, x.origin
		undo.Push("delete the shadow's service account "+sr.Name, sr.Delete)
	}
	sess, err := x.cfg.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	pod := sess.ShadowPod()
	if sr != nil {
		if err := sr.OwnBy(ctx, pod); err != nil {
			klog.FromContext(ctx).V(1).Info("own the self-restore identity", "err", err)
		}
	}
	undo.Push("delete shadow pod "+pod.Name, func(context.Context) error { return sess.Close() })
	x.mu.Lock()
	x.sess = sess
	x.mu.Unlock()
	return sess, nil
}

// serve keeps the forwards up: after a dropped tunnel it reconnects to the same shadow, and
// only after the API server says the shadow is gone it starts a new one.
func (x *exchanger) serve(ctx context.Context, fwds []session.Forward, ready func()) error {
	var extra undo.Stack // replacement shadows, removed at the end
	defer extra.Run(30 * time.Second)
	outage := &session.Outage{W: x.cfg.ErrOut, What: "exchange"}
	if x.fallback != nil {
		outage.PauseAfter = x.cfg.Pod.FallbackAfter
	}
	for ctx.Err() == nil {
		sess := x.current()
		err := sess.ServeForwards(ctx, fwds, x.cfg.ErrOut, func() { outage.Up(); ready() })
		if ctx.Err() != nil {
			return nil
		}
		// A tunnel failure is not a lost shadow: redial the same one for as long as the API
		// server does not say it is gone.
		name := sess.ShadowPod().Name
		gone, apiErr := session.PodGone(ctx, x.cfg.Client, x.ns, name)
		if !gone {
			outage.Failed(ctx, err, apiErr)
			continue
		}
		// A shadow that expired while this client was away has restored the Service: the
		// exchange is over, and a new shadow would serve nobody.
		if err := cluster.HeartbeatService(ctx, x.cfg.Client, x.ns, x.svc.Name, x.lockID); errors.Is(err, cluster.ErrLockLost) {
			return fmt.Errorf("the exchange of service %s/%s ended while this machine was away: its shadow expired and restored the Service (%w); start it again", x.ns, x.svc.Name, err)
		}
		session.Replace(ctx, x.cfg.ErrOut, name, func() (session.Shadow, error) { return x.newShadow(ctx, &extra) })
	}
	return nil
}

// scaleDown records the replicas on the workload, scales it to zero, and pushes the inverse:
// scale back and wait until the pods are ready again (before the shadow is deleted).
func (x *exchanger) scaleDown(ctx context.Context, w *target.Workload, undo *undo.Stack) error {
	replicas, inherited, err := cluster.ScaleToZero(ctx, x.cfg.Client, x.ns, w, x.lockID)
	if err != nil {
		return err
	}
	if inherited != nil {
		fmt.Fprintf(x.cfg.ErrOut, "%s/%s was scaled down by an earlier kt session (%s) that never scaled it back; it goes back to its %d replicas when you stop\n", w.Kind, w.Name, inherited.Session, replicas)
	}
	back := *w
	back.Replicas = replicas
	undo.Push(fmt.Sprintf("scale %s/%s back to %d", w.Kind, w.Name, replicas), func(ctx context.Context) error {
		if err := cluster.ScaleBack(ctx, x.cfg.Client, x.ns, &back); err != nil {
			return err
		}
		if err := waitReady(ctx, x.cfg.Client, x.ns, &back, x.cfg.RecoverWaitTime, x.cfg.ErrOut); err != nil {
			return err
		}
		return x.drainShadow(ctx)
	})
	return nil
}

// drainShadow takes the shadow out of the Service in scale mode, where it carries the
// selected labels: it drops them, then waits until the endpoints and kube-proxy have
// followed, so that deleting it refuses no client's connection.
func (x *exchanger) drainShadow(ctx context.Context) error {
	sess := x.current()
	if err := cluster.DropPodLabels(ctx, x.cfg.Client, x.ns, sess.ShadowPod().Name, slices.Collect(maps.Keys(x.svc.Spec.Selector))); err != nil {
		return err
	}
	sess.DrainService(ctx, x.svc.Name)
	return nil
}

func waitReady(ctx context.Context, client kubernetes.Interface, ns string, w *target.Workload, timeout time.Duration, out io.Writer) error {
	deadline := time.Now().Add(timeout)
	wait := progress.Start(out, fmt.Sprintf("Waiting for %s/%s to have %d ready pods again", w.Kind, w.Name, w.Replicas))
	defer wait.Stop()
	for {
		var ready int32
		if w.Kind == "Deployment" {
			d, err := client.AppsV1().Deployments(ns).Get(ctx, w.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready = d.Status.ReadyReplicas
		} else {
			s, err := client.AppsV1().StatefulSets(ns).Get(ctx, w.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready = s.Status.ReadyReplicas
		}
		if ready >= w.Replicas {
			return nil
		}
		if time.Now().After(deadline) {
			wait.Stop()
			fmt.Fprintf(out, "warning: %s/%s has %d of %d pods ready after %s; it keeps starting without kt\n", w.Kind, w.Name, ready, w.Replicas, timeout)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
