// Package cluster holds every change kt makes to a cluster, each beside its inverse: shadow
// pods and Deployments (their spec, PodOptions, and the waits for them), the identities and
// join Secrets they use, the Services kt makes (mesh's origin, preview's) and the ones it
// locks and redirects, and scale mode's workloads. Reading the cluster is pkg/target's and
// pkg/inventory's; the undo stack that runs these inverses on exit is pkg/undo.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// ShadowSpec describes a shadow pod.
type ShadowSpec struct {
	Namespace     string
	Role          string
	Session       string // random id shared by every object of one client session
	Owner         string // user@host
	Command       string // the command line, for `kubectl kt status` and birdseye
	AuthorizedKey string // OpenSSH authorized_keys line of the session's public key
	SecretDigest  string // wire.SecretDigest of the client's own stream secret, or ""
	// ForwardPorts are the ports remote forwards will listen on (exchange, mesh, preview):
	// declared on the container (with the names a Service's targetPort may use) and used
	// for the readiness probe.
	ForwardPorts []corev1.ContainerPort
	// RestoreService, when set (namespace/name), lets the agent restore that Service itself
	// once its client is gone; ServiceAccount must then allow it (see SelfRestoreRBAC).
	RestoreService string
	RestoreSession string // the session whose change to RestoreService the agent may undo
	ServiceAccount string
	// Args replaces the agent's arguments (the mesh router's).
	Args []string
	// Owner, when set, becomes the pod's controller reference: no workload controller adopts
	// a pod that already has one.
	OwnerRef *metav1.OwnerReference
	// Labels are added to kt's own (a Service's selector, for exchange).
	Labels map[string]string
	// Deployment runs the shadow from a Deployment of the same name (ShadowDeployment), whose
	// pods restart and are replaced; the agent deletes the Deployment once its client is gone,
	// as the ServiceAccount of the same name allows (CreateSelfDelete).
	Deployment bool
	// Shared makes a connect shadow that several clients use (see agent.Config.Shared). Its
	// agent has the join key from the Secret of the pod's name (EnsureJoinSecret).
	Shared bool
	// PodProxy makes the agent take reverse streams through the API server's pod proxy too
	// (wire/proxy.go), at the port ProxyPort reads back from the pod.
	PodProxy bool
	// Fallback maps forwarded ports to where the agent sends their connections once it has
	// not heard from its client for Opts.FallbackAfter (agent.Config.Fallback); OriginService
	// is the Service behind them, when the session made it (deleted by the agent on expiry).
	Fallback      map[int]string
	OriginService string
	Opts          *PodOptions
}

// ShadowPod builds the pod. It passes Pod Security "restricted": non-root, read-only root
// filesystem, no privilege escalation, no capabilities, RuntimeDefault seccomp.
func ShadowPod(s ShadowSpec) (*corev1.Pod, error) {
	res, err := s.Opts.Resources()
	if err != nil {
		return nil, err
	}
	c := agentContainer(s, res)
	lowPort := false
	for _, p := range s.ForwardPorts {
		p.Protocol = corev1.ProtocolTCP
		c.Ports = append(c.Ports, p)
		if p.ContainerPort < 1024 {
			lowPort = true
		}
	}
	c.ReadinessProbe = readinessProbe(s, &c)
	psc := &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](65532),
		RunAsGroup:     ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if lowPort {
		// A safe sysctl (allowed by Pod Security "restricted") lets the non-root agent bind
		// the forwarded ports below 1024 without any capability.
		psc.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
	}
	pod := &corev1.Pod{
		ObjectMeta: shadowMeta(s),
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{c},
			RestartPolicy:                 corev1.RestartPolicyNever,
			ServiceAccountName:            s.Opts.ServiceAccount,
			AutomountServiceAccountToken:  ptr.To(s.RestoreService != "" || s.Deployment),
			NodeSelector:                  s.Opts.NodeSelector,
			SecurityContext:               psc,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			EnableServiceLinks:            ptr.To(false),
		},
	}
	if s.ServiceAccount != "" {
		pod.Spec.ServiceAccountName = s.ServiceAccount
	}
	if s.Deployment {
		pod.Spec.ServiceAccountName = pod.Name
		pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.OwnerRef != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*s.OwnerRef}
	}
	if s.Opts.ImagePullSecret != "" {
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: s.Opts.ImagePullSecret}}
	}
	if s.Role == wire.RoleRouter {
		routerResources(pod)
	}
	return pod, nil
}

// shadowMeta is the shadow pod's name, labels (the user's, the spec's, then kt's own) and
// annotations.
func shadowMeta(s ShadowSpec) metav1.ObjectMeta {
	labels := map[string]string{}
	for k, v := range s.Opts.Labels {
		labels[k] = v
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[wire.ManagedByLabel] = wire.ManagedBy
	labels[wire.RoleLabel] = s.Role
	labels[wire.SessionLabel] = s.Session
	ann := map[string]string{}
	for k, v := range s.Opts.Annotations {
		ann[k] = v
	}
	ann[wire.OwnerAnnotation] = s.Owner
	ann[wire.CommandAnnotation] = s.Command
	ann[wire.HeartbeatAnnotation] = time.Now().UTC().Format(time.RFC3339)
	return metav1.ObjectMeta{Name: wire.ShadowName(s.Role, s.Session), Namespace: s.Namespace, Labels: labels, Annotations: ann}
}

// agentContainer is the agent's container: non-root, read-only, no capabilities, with what
// the agent needs to know in its environment.
func agentContainer(s ShadowSpec, res corev1.ResourceList) corev1.Container {
	pull := corev1.PullIfNotPresent
	if s.Opts.ForceUpdate {
		pull = corev1.PullAlways
	}
	fieldRef := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c := corev1.Container{
		Name:            "agent",
		Image:           s.Opts.Image,
		ImagePullPolicy: pull,
		Args:            []string{fmt.Sprintf("--expire-after=%s", s.Opts.ExpireAfter)},
		Env: []corev1.EnvVar{
			{Name: wire.EnvAuthorizedKey, Value: s.AuthorizedKey},
			{Name: wire.EnvPodIP, ValueFrom: fieldRef("status.podIP")},
		},
		Resources: corev1.ResourceRequirements{Requests: res, Limits: res},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if s.Args != nil {
		c.Args = s.Args
	}
	if s.SecretDigest != "" {
		c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvSecretDigest, Value: s.SecretDigest})
	}
	if s.RestoreService != "" {
		c.Env = append(c.Env,
			corev1.EnvVar{Name: wire.EnvRestoreService, Value: s.RestoreService},
			corev1.EnvVar{Name: wire.EnvSession, Value: s.RestoreSession},
			corev1.EnvVar{Name: wire.EnvPodName, ValueFrom: fieldRef("metadata.name")},
			corev1.EnvVar{Name: wire.EnvPodNamespace, ValueFrom: fieldRef("metadata.namespace")},
		)
	}
	if len(s.Fallback) > 0 && s.Opts.FallbackAfter > 0 {
		c.Args = append(c.Args, fmt.Sprintf("--fallback-after=%s", s.Opts.FallbackAfter))
		c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvFallback, Value: wire.FormatFallback(s.Fallback)})
		if s.OriginService != "" {
			c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvOriginService, Value: s.OriginService})
		}
	}
	if s.Shared {
		c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvShared, Value: "true"},
			corev1.EnvVar{Name: wire.EnvJoinKey, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: wire.ShadowName(s.Role, s.Session)}, Key: wire.JoinSecretKey}}})
	}
	if s.PodProxy {
		c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvProxyPort, Value: strconv.Itoa(int(proxyPort(s.ForwardPorts)))})
	}
	if s.Deployment {
		c.Env = append(c.Env,
			corev1.EnvVar{Name: wire.EnvDeployment, Value: wire.ShadowName(s.Role, s.Session)},
			corev1.EnvVar{Name: wire.EnvPodNamespace, ValueFrom: fieldRef("metadata.namespace")},
		)
	}
	return c
}

// readinessProbe makes a shadow with remote forwards Ready only once the client's forwards
// listen: a Service sends traffic to the shadow no earlier. The agent answers on a port of its
// own (told to it in c's environment): a probe of the forwarded port would look like traffic
// (wire.Traffic). The router serves its ports itself and tells a probe's empty connection
// from traffic. A shadow without forwards has no probe.
func readinessProbe(s ShadowSpec, c *corev1.Container) *corev1.Probe {
	if len(s.ForwardPorts) == 0 {
		return nil
	}
	handler := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(s.ForwardPorts[0].ContainerPort)}}
	if s.Role != wire.RoleRouter {
		probe := probePort(s.ForwardPorts)
		if probe != wire.ProbePort {
			c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvProbePort, Value: strconv.Itoa(int(probe))})
		}
		handler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: fmt.Sprintf("/forwarding?port=%d", s.ForwardPorts[0].ContainerPort), Port: intstr.FromInt32(probe)}}
	}
	return &corev1.Probe{
		ProbeHandler:  handler,
		PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
	}
}

// The router's default resources, where --pod-quota sets none: it holds every meshed
// request's head and buffers, so it gets a memory limit, and Go a soft limit below it
// (GOMEMLIMIT) to collect garbage before the kernel kills it. Should it die anyway (out of
// memory, a crash), the kubelet restarts it in place: same pod, same IP, so the Service's
// only endpoint comes back within seconds instead of staying empty.
var (
	routerRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	routerLimits   = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
)

func routerResources(pod *corev1.Pod) {
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	c := &pod.Spec.Containers[0]
	if c.Resources.Requests == nil {
		c.Resources.Requests = routerRequests.DeepCopy()
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		if c.Resources.Limits == nil {
			c.Resources.Limits = corev1.ResourceList{}
		}
		c.Resources.Limits[corev1.ResourceMemory] = routerLimits[corev1.ResourceMemory]
	}
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		c.Env = append(c.Env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: strconv.FormatInt(mem.Value()*4/5, 10)})
	}
}

// ShadowDeployment is a Deployment of one replica running pod (from ShadowPod with
// Deployment set); its pods carry the pod's name as a prefix and its labels.
func ShadowDeployment(pod *corev1.Pod) *appsv1.Deployment {
	sel := map[string]string{
		wire.ManagedByLabel: pod.Labels[wire.ManagedByLabel],
		wire.RoleLabel:      pod.Labels[wire.RoleLabel],
		wire.SessionLabel:   pod.Labels[wire.SessionLabel],
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels, Annotations: pod.Annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations},
				Spec:       pod.Spec,
			},
		},
	}
}

// WaitSessionPod waits for a running pod of the session other than skip (a Deployment's
// pod, or its replacement).
func WaitSessionPod(ctx context.Context, client kubernetes.Interface, ns, session, skip string, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.SessionLabel + "=" + session + "," + wire.ManagedByLabel + "=" + wire.ManagedBy})
		if err != nil {
			return nil, waitErr(ctx, err, ns, "of session "+session, timeout)
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Name == skip || p.DeletionTimestamp != nil {
				continue
			}
			if ok, err := podUsable(p, false); ok || err != nil {
				return p, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, waitErr(ctx, ctx.Err(), ns, "of session "+session, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CreateShadow creates the pod and waits until its agent runs.
func CreateShadow(ctx context.Context, client kubernetes.Interface, s ShadowSpec) (*corev1.Pod, error) {
	pod, err := ShadowPod(s)
	if err != nil {
		return nil, err
	}
	created, err := client.CoreV1().Pods(s.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, Explain(err, "create", "pods", s.Namespace)
	}
	return created, nil
}

// WaitRunning waits until the pod's agent container runs (and, when the pod has a readiness
// probe and ready is true, until it is ready). Image and scheduling failures end the wait
// at once with what to do.
func WaitRunning(ctx context.Context, client kubernetes.Interface, ns, name string, timeout time.Duration, ready bool) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods := client.CoreV1().Pods(ns)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, waitErr(ctx, err, ns, name, timeout)
		}
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("shadow pod %s/%s disappeared while starting", ns, name)
		}
		if done, err := podUsable(&list.Items[0], ready); done || err != nil {
			return &list.Items[0], err
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			return nil, waitErr(ctx, err, ns, name, timeout)
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				w.Stop()
				return nil, fmt.Errorf("shadow pod %s/%s was deleted while starting", ns, name)
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if done, err := podUsable(p, ready); done || err != nil {
				w.Stop()
				return p, err
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return nil, waitErr(ctx, ctx.Err(), ns, name, timeout)
		}
	}
}

func waitErr(ctx context.Context, err error, ns, name string, timeout time.Duration) error {
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("shadow pod %s/%s not running after %s; see 'kubectl -n %s describe pod %s', or raise --pod-creation-timeout", ns, name, timeout, ns, name)
	}
	return fmt.Errorf("wait for shadow pod %s/%s: %w", ns, name, err)
}

// PodEnding reports a pod that is being deleted or has finished: it will not serve again.
func PodEnding(p *corev1.Pod) bool {
	return p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podUsable reports whether the pod is running, or why it never will.
func podUsable(p *corev1.Pod, needReady bool) (bool, error) {
	ref := p.Namespace + "/" + p.Name
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		msg := p.Status.Message
		for _, cs := range p.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.Message != "" {
				msg = strings.TrimSpace(t.Message)
			}
		}
		return false, fmt.Errorf("shadow pod %s exited (%s): %s", ref, p.Status.Phase, msg)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return false, fmt.Errorf("shadow pod %s cannot be scheduled: %s; check --node-selector and --pod-quota", ref, c.Message)
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			if PullFailed(w.Reason) {
				return false, fmt.Errorf("shadow image %s cannot be pulled on node %s (%s: %s); %s", cs.Image, p.Spec.NodeName, w.Reason, w.Message, PullHint(cs.Image))
			}
			switch w.Reason {
			case "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				if strings.Contains(w.Message, "failed to sync") {
					// A kubelet just restarted has not filled its Secret or ConfigMap cache
					// yet; it retries by itself.
					continue
				}
				return false, fmt.Errorf("shadow pod %s cannot start its container (%s): %s", ref, w.Reason, w.Message)
			}
		}
		if cs.State.Running != nil && (!needReady || cs.Ready) && p.Status.PodIP != "" {
			return true, nil
		}
	}
	return false, nil
}

// CreateShadowDeployment creates the Deployment that keeps a pod like tmpl running (see
// ShadowDeployment). Its inverse is DeleteShadowDeployment.
func CreateShadowDeployment(ctx context.Context, client kubernetes.Interface, tmpl *corev1.Pod) (*appsv1.Deployment, error) {
	d, err := client.AppsV1().Deployments(tmpl.Namespace).Create(ctx, ShadowDeployment(tmpl), metav1.CreateOptions{})
	if err != nil {
		return nil, Explain(err, "create", "deployments", tmpl.Namespace)
	}
	return d, nil
}

// DeleteShadowDeployment deletes a shadow Deployment and, at once, its pods (those of its
// session).
func DeleteShadowDeployment(ctx context.Context, client kubernetes.Interface, ns, name, session string) error {
	err := client.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return Explain(err, "delete", "deployments", ns)
	}
	return deleteShadows(ctx, client, ns, wire.SessionLabel+"="+session+","+wire.ManagedByLabel+"="+wire.ManagedBy)
}

// deleteShadows deletes the shadow pods that selector selects, and says which it could not.
func deleteShadows(ctx context.Context, client kubernetes.Interface, ns, selector string) error {
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return Explain(err, "list", "pods", ns)
	}
	var errs []error
	for _, p := range pods.Items {
		errs = append(errs, DeleteShadow(ctx, client, ns, p.Name))
	}
	return errors.Join(errs...)
}

// DeleteExchangeObjects deletes what an exchange session left in the cluster besides the
// Service it changed: its shadow pods and the origin Service its shadows fall back to. recover
// calls it once the Service is restored, so nothing of the session stays behind.
func DeleteExchangeObjects(ctx context.Context, client kubernetes.Interface, ns, session string) error {
	errs := []error{deleteShadows(ctx, client, ns, wire.ExchangeLabel+"="+session)}
	svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{
		LabelSelector: wire.ExchangeLabel + "=" + session + "," + wire.RoleLabel + "=origin," + wire.ManagedByLabel + "=" + wire.ManagedBy})
	if err != nil {
		return errors.Join(append(errs, Explain(err, "list", "services", ns))...)
	}
	for _, s := range svcs.Items {
		errs = append(errs, DeleteService(ctx, client, ns, s.Name))
	}
	return errors.Join(errs...)
}

// probePort is wire.ProbePort, or the first port above it that no forward uses.
func probePort(fwds []corev1.ContainerPort) int32 {
	p := int32(wire.ProbePort)
	for slices.ContainsFunc(fwds, func(f corev1.ContainerPort) bool { return f.ContainerPort == p }) {
		p++
	}
	return p
}

// proxyPort is wire.ProxyPort, or the first port above it that neither a forward nor the
// readiness probe uses.
func proxyPort(fwds []corev1.ContainerPort) int32 {
	probe := probePort(fwds)
	p := int32(wire.ProxyPort)
	for p == probe || slices.ContainsFunc(fwds, func(f corev1.ContainerPort) bool { return f.ContainerPort == p }) {
		p++
	}
	return p
}

// ProxyPort is the port a shadow pod takes reverse streams on through the pod proxy, or 0.
func ProxyPort(pod *corev1.Pod) int {
	for _, c := range pod.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == wire.EnvProxyPort {
				if n, err := strconv.Atoi(e.Value); err == nil && n > 0 && n < 65536 {
					return n
				}
			}
		}
	}
	return 0
}

// DeleteShadow deletes the pod at once; a missing pod is not an error.
func DeleteShadow(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	err := client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil && !apierrors.IsNotFound(err) {
		return Explain(err, "delete", "pods", ns)
	}
	return nil
}

// HeartbeatPod stamps the shadow pod with the time: its agent, status and clean tell a live
// client by it.
func HeartbeatPod(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, wire.HeartbeatAnnotation, time.Now().UTC().Format(time.RFC3339))
	_, err := client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// DropPodLabels removes the label keys from a pod (exchange's scale mode takes its shadow out
// of the Service so).
func DropPodLabels(ctx context.Context, client kubernetes.Interface, ns, name string, keys []string) error {
	labels := map[string]any{}
	for _, k := range keys {
		labels[k] = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	_, err := client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return Explain(err, "patch", "pods", ns)
}

// Explain turns a Forbidden from the API server into a message that names the missing permission.
func Explain(err error, verb, resource, ns string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w; you need permission to %s %s in namespace %s (see docs/rbac.yaml)", err, verb, resource, ns)
	}
	return err
}

// PullFailed tells whether a container waiting for this reason cannot get its image.
func PullFailed(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName":
		return true
	}
	return false
}

// PullHint says what to do when the nodes cannot pull the shadow image: copy it to a registry
// they reach, and name it with --image (and --image-pull-secret for a private one).
func PullHint(image string) string {
	tag := "TAG"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		tag = image[i+1:]
	}
	return fmt.Sprintf("copy it to a registry the nodes reach (crane copy %s REGISTRY/kubectl-kt/shadow:%s) and pass --image REGISTRY/kubectl-kt/shadow:%s, with --image-pull-secret NAME (a docker-registry Secret in the namespace) if that registry is private", image, tag, tag)
}
