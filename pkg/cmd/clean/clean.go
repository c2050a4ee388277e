// Package clean implements `kubectl kt clean`.
package clean

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/mount"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Options holds the flags of clean.
type Options struct {
	Threshold     time.Duration
	DryRun        bool
	LocalOnly     bool
	AllNamespaces bool

	client    kubernetes.Interface
	namespace string
	errs      []error // what could not be cleaned
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Threshold: 2 * time.Minute, IOStreams: streams}
}

// NewCmdClean returns the clean command.
func NewCmdClean(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "clean",
		Short: "Remove what crashed kt sessions left behind, locally and in the cluster",
		Long: `Clean undoes the local changes of a connect that did not exit cleanly (DNS settings, hosts
entries, TUN devices), then deletes kt's objects in the cluster whose client stopped sending
heartbeats more than --threshold ago. Live sessions are never touched.`,
		Example: `  kubectl kt clean
  kubectl kt clean --dry-run
  sudo kubectl kt clean --local-only`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	kube.DurationVar(cmd.Flags(), &o.Threshold, "threshold", o.Threshold, "Age of the last heartbeat after which a kt object counts as abandoned.")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", o.DryRun, "Only print what would be cleaned.")
	cmd.Flags().BoolVar(&o.LocalOnly, "local-only", o.LocalOnly, "Clean only this machine, not the cluster.")
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "Clean kt objects in every namespace.")
	return cmd
}

// Validate checks the flags.
func (o *Options) Validate() error {
	if o.Threshold < 0 {
		return fmt.Errorf("--threshold must not be negative")
	}
	return nil
}

// Complete builds the client unless only local state is cleaned.
func (o *Options) Complete(f genericclioptions.RESTClientGetter) error {
	if o.LocalOnly {
		return nil
	}
	var err error
	o.namespace, _, o.client, err = kube.Clients(f)
	return err
}

// Run cleans.
func (o *Options) Run(ctx context.Context) error {
	verb := "Cleaned"
	if o.DryRun {
		verb = "Would clean"
	}
	cleaned, running, err := connect.CleanLocal(o.DryRun, netadmin.ForUser(netadmin.HelperOptions{Stdin: os.Stdin, Stdout: o.ErrOut, Stderr: o.ErrOut, Notice: "Undoing a crashed connect's TUN, DNS or hosts changes as root through sudo"}))
	for _, st := range cleaned {
		fmt.Fprintf(o.Out, "%s local leftovers of connect pid %d (shadow %s, dns %s, tun %s)\n", verb, st.PID, st.Shadow, st.DNSMode, st.TUN)
	}
	for _, st := range running {
		fmt.Fprintf(o.ErrOut, "Left alone: connect pid %d is running (shadow %s)\n", st.PID, st.Shadow)
	}
	mounts, merr := mount.CleanStale(connect.StateDir(), o.DryRun)
	for _, m := range mounts {
		fmt.Fprintf(o.Out, "%s the files of kubectl kt run or mount pid %d in %s\n", verb, m.PID, m.Root)
	}
	if err = errors.Join(err, merr); err != nil {
		return err
	}
	if o.LocalOnly {
		return nil
	}
	ns := o.namespace
	if o.AllNamespaces {
		ns = ""
	}
	live, m, err := o.cleanServices(ctx, ns, verb)
	if err != nil {
		return err
	}
	n := m
	liveSession, err := o.cleanShadows(ctx, ns, verb, live, &n)
	if err != nil {
		return err
	}
	if err := o.cleanOrigins(ctx, ns, verb, live, &n); err != nil {
		return err
	}
	if err := o.cleanIdentities(ctx, ns, verb, live, liveSession, &n); err != nil {
		return err
	}
	if err := o.cleanJoinSecrets(ctx, ns, verb, &n); err != nil {
		return err
	}
	if len(o.errs) > 0 {
		return fmt.Errorf("%d of kt's objects could not be cleaned: %w", len(o.errs), errors.Join(o.errs...))
	}
	if n == 0 && len(cleaned) == 0 {
		fmt.Fprintln(o.ErrOut, "Nothing to clean")
	}
	return nil
}

// cleanShadows deletes the shadow pods and Deployments whose client is gone; it returns the
// sessions that still have a live pod.
func (o *Options) cleanShadows(ctx context.Context, ns, verb string, live map[string]bool, n *int) (map[string]bool, error) {
	pods, err := o.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if err != nil {
		return nil, cluster.Explain(err, "list", "pods", ns)
	}
	liveSession := map[string]bool{}
	for _, p := range pods.Items {
		if !stale(&p, o.Threshold) {
			liveSession[p.Labels[wire.SessionLabel]] = true
		}
	}
	for _, p := range pods.Items {
		if metav1.GetControllerOf(&p) != nil && metav1.GetControllerOf(&p).Kind == "ReplicaSet" {
			continue // a shadow Deployment's pod: its Deployment is judged below
		}
		if live[p.Labels[wire.ExchangeLabel]] || !stale(&p, o.Threshold) {
			continue // a live exchange's or mesh's pod (a router refreshes no heartbeat of its own)
		}
		*n++
		fmt.Fprintf(o.Out, "%s pod %s/%s (owner %s, last heartbeat %s)\n", verb, p.Namespace, p.Name, p.Annotations[wire.OwnerAnnotation], p.Annotations[wire.HeartbeatAnnotation])
		if !o.DryRun {
			if err := cluster.DeleteShadow(ctx, o.client, p.Namespace, p.Name); err != nil {
				o.failed(fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err))
			}
		}
	}
	// Shadow Deployments: stale when no pod of theirs has a fresh heartbeat.
	deps, err := o.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if err != nil {
		return nil, cluster.Explain(err, "list", "deployments", ns)
	}
	for _, d := range deps.Items {
		if liveSession[d.Labels[wire.SessionLabel]] || time.Since(d.CreationTimestamp.Time) <= o.Threshold {
			continue
		}
		*n++
		fmt.Fprintf(o.Out, "%s shadow deployment %s/%s (owner %s)\n", verb, d.Namespace, d.Name, d.Annotations[wire.OwnerAnnotation])
		if !o.DryRun {
			if err := cluster.DeleteShadowDeployment(ctx, o.client, d.Namespace, d.Name, d.Labels[wire.SessionLabel]); err != nil {
				o.failed(fmt.Errorf("delete shadow deployment %s/%s: %w", d.Namespace, d.Name, err))
			}
		}
	}
	return liveSession, nil
}

// failed records what could not be cleaned: the rest is still cleaned, then Run fails.
func (o *Options) failed(err error) {
	fmt.Fprintf(o.ErrOut, "Error: %v\n", err)
	o.errs = append(o.errs, err)
}

// listed warns when kt's objects of a kind could not be listed for lack of the right (so none
// of them is cleaned), and fails for any other error.
func (o *Options) listed(err error, resource, ns string) {
	switch {
	case err == nil:
	case apierrors.IsForbidden(err):
		fmt.Fprintf(o.ErrOut, "Warning: not allowed to list %s in %s: none of them is checked (%v)\n", resource, scopeName(ns), err)
	default:
		o.failed(cluster.Explain(err, "list", resource, ns))
	}
}

func scopeName(ns string) string {
	if ns == "" {
		return "any namespace"
	}
	return "namespace " + ns
}

// stale reports whether a kt pod's client is gone: its agent exited, or its heartbeat is older
// than threshold.
func stale(p *corev1.Pod, threshold time.Duration) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return true
	}
	hb, err := time.Parse(time.RFC3339, p.Annotations[wire.HeartbeatAnnotation])
	if err != nil {
		return time.Since(p.CreationTimestamp.Time) > threshold
	}
	return time.Since(hb) > threshold
}

// cleanServices restores Services whose lock's heartbeat is stale and scales workloads that
// scale mode left at zero back up.
// It returns the sessions whose lock is live.
func (o *Options) cleanServices(ctx context.Context, ns, verb string) (map[string]bool, int, error) {
	n := 0
	live := map[string]bool{}
	svcs, err := o.client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, 0, cluster.Explain(err, "list", "services", ns)
	}
	for _, svc := range svcs.Items {
		l, ok := wire.ServiceLock(&svc)
		if !ok {
			if _, undo := svc.Annotations[wire.UndoAnnotation]; !undo {
				continue
			}
			l = &wire.Lock{Owner: "unknown"}
		}
		if time.Since(l.Heartbeat) <= o.Threshold {
			live[l.Session] = true
			fmt.Fprintf(o.ErrOut, "Left alone: service %s/%s is %s by %s (heartbeat %s ago)\n", svc.Namespace, svc.Name, wire.Done(l.Role), l.Owner, time.Since(l.Heartbeat).Round(time.Second))
			continue
		}
		n++
		fmt.Fprintf(o.Out, "%s service %s/%s (%s by %s, last heartbeat %s)\n", verb, svc.Namespace, svc.Name, wire.Done(l.Role), l.Owner, l.Heartbeat.Local().Format(time.RFC3339))
		if !o.DryRun {
			if _, err := cluster.RestoreService(ctx, o.client, svc.Namespace, svc.Name, ""); err != nil {
				o.failed(fmt.Errorf("restore service %s/%s: %w", svc.Namespace, svc.Name, err))
			}
		}
	}
	scaleBack := func(kind, ns, name string, ann map[string]string) error {
		var u target.WorkloadUndo
		s, ok := ann[wire.UndoAnnotation]
		if !ok || json.Unmarshal([]byte(s), &u) != nil || live[u.Session] {
			return nil
		}
		n++
		fmt.Fprintf(o.Out, "%s %s %s/%s: scale back to %d replicas\n", verb, strings.ToLower(kind), ns, name, u.Replicas)
		if o.DryRun {
			return nil
		}
		return cluster.ScaleBack(ctx, o.client, ns, &target.Workload{Kind: kind, Name: name, Replicas: u.Replicas})
	}
	ds, err := o.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	o.listed(err, "deployments", ns)
	if err == nil {
		for _, d := range ds.Items {
			if err := scaleBack("Deployment", d.Namespace, d.Name, d.Annotations); err != nil {
				o.failed(fmt.Errorf("scale back deployment %s/%s: %w", d.Namespace, d.Name, err))
			}
		}
	}
	ss, err := o.client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	o.listed(err, "statefulsets", ns)
	if err == nil {
		for _, s := range ss.Items {
			if err := scaleBack("StatefulSet", s.Namespace, s.Name, s.Annotations); err != nil {
				o.failed(fmt.Errorf("scale back statefulset %s/%s: %w", s.Namespace, s.Name, err))
			}
		}
	}
	return live, n, nil
}

// cleanOrigins deletes the origin Services of meshes that no longer hold their Service.
func (o *Options) cleanOrigins(ctx context.Context, ns, verb string, live map[string]bool, n *int) error {
	svcs, err := o.client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=origin"})
	if err != nil {
		return cluster.Explain(err, "list", "services", ns)
	}
	for _, s := range svcs.Items {
		if live[s.Labels[wire.ExchangeLabel]] {
			continue
		}
		*n++
		fmt.Fprintf(o.Out, "%s service %s/%s (the origin Service of a gone mesh or exchange)\n", verb, s.Namespace, s.Name)
		if !o.DryRun {
			if err := cluster.DeleteService(ctx, o.client, s.Namespace, s.Name); err != nil {
				o.failed(fmt.Errorf("delete service %s/%s: %w", s.Namespace, s.Name, err))
			}
		}
	}
	return nil
}

// cleanIdentities removes the ServiceAccounts, Roles and RoleBindings kt gave shadows (to
// restore a Service, or delete their Deployment) whose session is gone: no pod of the session
// has a fresh heartbeat and no Service is locked by it. A session is told by its label, never
// by a pod's name (a shadow Deployment's pods have hashed names: their live identity used to
// be deleted). One made less than --threshold ago is left alone: its session may be starting.
func (o *Options) cleanIdentities(ctx context.Context, ns, verb string, live, liveSession map[string]bool, n *int) error {
	sas, err := o.client.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if err != nil {
		return cluster.Explain(err, "list", "serviceaccounts", ns)
	}
	for _, sa := range sas.Items {
		sess := sa.Labels[wire.SessionLabel]
		if live[sess] || liveSession[sess] || time.Since(sa.CreationTimestamp.Time) <= o.Threshold {
			continue
		}
		*n++
		fmt.Fprintf(o.Out, "%s service account, role and role binding %s/%s of a gone session\n", verb, sa.Namespace, sa.Name)
		if !o.DryRun {
			if err := cluster.DeleteIdentity(ctx, o.client, sa.Namespace, sa.Name); err != nil {
				o.failed(fmt.Errorf("delete the identity %s/%s: %w", sa.Namespace, sa.Name, err))
			}
		}
	}
	return nil
}

// cleanJoinSecrets deletes the join Secrets of shared shadows that are gone. The garbage
// collector removes one with its pod; this is for a client killed between making the Secret
// and the pod. Without the right to list Secrets there are none of kt's to see.
func (o *Options) cleanJoinSecrets(ctx context.Context, ns, verb string, n *int) error {
	secs, err := o.client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
	if apierrors.IsForbidden(err) {
		klog.FromContext(ctx).V(1).Info("not allowed to list secrets: no shared shadow's join key checked", "err", err)
		return nil
	}
	if err != nil {
		return cluster.Explain(err, "list", "secrets", ns)
	}
	for _, sec := range secs.Items {
		if time.Since(sec.CreationTimestamp.Time) <= o.Threshold {
			continue
		}
		// Every namespace's shared shadow has the same session: judge the pod of its name.
		if p, err := o.client.CoreV1().Pods(sec.Namespace).Get(ctx, sec.Name, metav1.GetOptions{}); err == nil && !stale(p, o.Threshold) {
			continue
		}
		*n++
		fmt.Fprintf(o.Out, "%s join key %s/%s of a gone shared shadow\n", verb, sec.Namespace, sec.Name)
		if !o.DryRun {
			if err := cluster.DeleteJoinSecret(ctx, o.client, sec.Namespace, sec.Name); err != nil {
				o.failed(fmt.Errorf("delete secret %s/%s: %w", sec.Namespace, sec.Name, err))
			}
		}
	}
	return nil
}
