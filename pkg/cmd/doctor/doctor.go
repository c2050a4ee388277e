// Package doctor implements `kubectl kt doctor`: a preflight that says what will fail and how
// to fix it.
package doctor

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/tun"
	"github.com/kubectl-kt/kt/pkg/version"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Permission is one RBAC rule kt uses.
type Permission struct {
	Group, Resource, Sub, Verb string
	For                        string // the commands that need it
	Optional                   string // when set, what is lost without it (a warning, not a failure)
	Name                       string // the one object the rule names, when it names one
}

// Permissions lists what kt asks of the API server (docs/rbac.yaml grants exactly these).
var Permissions = []Permission{
	{"", "pods", "", "create", "connect, exchange, mesh, preview, forward", "", ""},
	{"", "pods", "", "get", "every command", "", ""},
	{"", "pods", "", "list", "every command", "", ""},
	{"", "pods", "", "watch", "connect, exchange", "", ""},
	{"", "pods", "", "delete", "every command (its own shadows)", "", ""},
	{"", "pods", "", "patch", "heartbeats", "", ""},
	{"", "pods", "portforward", "create", "every command (the tunnel)", "", ""},
	{"", "pods", "proxy", "get", "mirror", "mirror's copies take the port-forward, which costs the node more", ""},
	{"", "services", "", "get", "exchange, mesh, preview, forward", "", ""},
	{"", "services", "", "list", "exchange, mesh, birdseye, clean", "", ""},
	{"", "services", "", "watch", "connect (Service names answered here, with no round trip)", "connect looks up each Service name through the tunnel", ""},
	{"", "services", "", "update", "exchange, mesh, recover, clean", "", ""},
	{"", "services", "", "create", "connect (dry-run range probe), mesh, preview", "", ""},
	{"", "services", "", "delete", "mesh, preview, clean", "", ""},
	{"discovery.k8s.io", "endpointslices", "", "list", "exchange, connect --dns-mode hosts", "", ""},
	{"discovery.k8s.io", "endpointslices", "", "watch", "connect (headless Services' and StatefulSet pods' names answered here), connect --dns-mode hosts",
		"connect looks up headless Services' pods through the tunnel, and --dns-mode hosts fails", ""},
	{"", "serviceaccounts", "", "create", "exchange, mesh (the shadow restores the Service by itself if its client dies), preview", "", ""},
	{"rbac.authorization.k8s.io", "roles", "", "create", "exchange, mesh (the shadow restores the Service by itself if its client dies), preview", "", ""},
	{"rbac.authorization.k8s.io", "rolebindings", "", "create", "exchange, mesh (the shadow restores the Service by itself if its client dies), preview", "", ""},
	{"apps", "deployments", "", "patch", "exchange --mode scale", "scale mode", ""},
	{"", "secrets", "", "create", "connect --share-shadow (the join key)", "--share-shadow", ""},
	{"", "secrets", "", "get", "connect --share-shadow (the join key)", "--share-shadow", "kt-connect-shared"},
	{"", "namespaces", "", "list", "connect (cluster names by namespace)", "only the namespace connected to resolves as svc.ns", ""},
	{"", "nodes", "", "list", "connect (pod ranges)", "pod ranges are guessed from a sample of pod IPs", ""},
}

// Options holds the flags of doctor.
type Options struct {
	Image           string
	ImagePullSecret string

	namespace string
	client    kubernetes.Interface
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Image: version.ShadowImage(), IOStreams: streams}
}

// NewCmdDoctor returns the doctor command.
func NewCmdDoctor(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check what kt needs here and in the cluster, and say how to fix what is missing",
		Args:  cobra.NoArgs,
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
	cmd.Flags().StringVar(&o.Image, "image", o.Image, "The shadow image to look for on the nodes.")
	cmd.Flags().StringVar(&o.ImagePullSecret, "image-pull-secret", o.ImagePullSecret, "The Secret the shadow image is pulled with, to check.")
	return cmd
}

// Complete builds a client that gives up on an unreachable cluster after 10 s.
func (o *Options) Complete(f genericclioptions.RESTClientGetter) error {
	ns, _, err := f.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return err
	}
	rc, err := f.ToRESTConfig()
	if err != nil {
		return err
	}
	rc.Timeout = 10 * time.Second
	o.namespace = ns
	o.client, err = kubernetes.NewForConfig(rc)
	return err
}

// Validate checks --image; it changes nothing.
func (o *Options) Validate() error {
	if strings.TrimSpace(o.Image) == "" || strings.ContainsAny(o.Image, " \t\n") {
		return fmt.Errorf("--image %q: name an image, such as %s", o.Image, version.ShadowImage())
	}
	return nil
}

// Run prints one line per check and fails when any check failed.
func (o *Options) Run(ctx context.Context) error {
	d := &doctor{out: o.Out}
	d.run(ctx, o.client, o.namespace, o.Image, o.ImagePullSecret)
	if d.failed > 0 {
		return fmt.Errorf("%d check(s) failed; see the lines marked FAIL above", d.failed)
	}
	return nil
}

type doctor struct {
	out    io.Writer
	failed int
}

func (d *doctor) ok(format string, a ...any)   { fmt.Fprintf(d.out, "ok    "+format+"\n", a...) }
func (d *doctor) warn(format string, a ...any) { fmt.Fprintf(d.out, "warn  "+format+"\n", a...) }
func (d *doctor) fail(format string, a ...any) {
	d.failed++
	fmt.Fprintf(d.out, "FAIL  "+format+"\n", a...)
}

func (d *doctor) run(ctx context.Context, client kubernetes.Interface, ns, image, pullSecret string) {
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		d.fail("cluster unreachable: %v; check --kubeconfig and --context", err)
		return
	}
	d.ok("cluster reachable (Kubernetes %s), namespace %s", v.GitVersion, ns)
	d.permissions(ctx, client, ns)
	d.image(ctx, client, image)
	d.pulls(ctx, client, ns, pullSecret)
	d.privileges()
	d.routes(ctx, client, ns)
	d.resolver()
}

// permissions checks each of Permissions with a SelfSubjectAccessReview.
func (d *doctor) permissions(ctx context.Context, client kubernetes.Interface, ns string) {
	for _, p := range Permissions {
		scope := ns
		if p.Resource == "namespaces" || p.Resource == "nodes" {
			scope = ""
		}
		r, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authv1.ResourceAttributes{Namespace: scope, Verb: p.Verb, Group: p.Group, Resource: p.Resource, Subresource: p.Sub, Name: p.Name}}}, metav1.CreateOptions{})
		res := p.Resource
		if p.Sub != "" {
			res += "/" + p.Sub
		}
		switch {
		case err != nil:
			d.warn("cannot check %s %s: %v", p.Verb, res, err)
		case r.Status.Allowed:
			d.ok("may %s %s (%s)", p.Verb, res, p.For)
		case p.Optional != "":
			d.warn("may not %s %s: %s; ask for it (docs/rbac.yaml)", p.Verb, res, p.Optional)
		default:
			d.fail("may not %s %s in namespace %s, which %s needs; ask your admin for the Role in docs/rbac.yaml", p.Verb, res, scope, p.For)
		}
	}
}

// image looks for the shadow image on the nodes (when nodes can be read).
func (d *doctor) image(ctx context.Context, client kubernetes.Interface, image string) {
	if nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		have := 0
		for _, n := range nodes.Items {
			for _, img := range n.Status.Images {
				for _, name := range img.Names {
					if name == image || strings.HasSuffix(name, "/"+image) {
						have++
					}
				}
			}
		}
		if have > 0 {
			d.ok("shadow image %s is present on %d of %d nodes", image, have, len(nodes.Items))
		} else {
			d.warn("shadow image %s is on no node yet: the nodes pull it from its registry; if they cannot reach it, %s", image, cluster.PullHint(image))
		}
	}
}

// pulls fails on kt's pods in ns that cannot pull their image, and checks the pull Secret.
func (d *doctor) pulls(ctx context.Context, client kubernetes.Interface, ns, pullSecret string) {
	if pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy}); err == nil {
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && cluster.PullFailed(w.Reason) {
					d.fail("pod %s/%s cannot pull %s on node %s (%s: %s); %s", ns, p.Name, cs.Image, p.Spec.NodeName, w.Reason, w.Message, cluster.PullHint(cs.Image))
				}
			}
		}
	}
	if pullSecret == "" {
		return
	}
	s, err := client.CoreV1().Secrets(ns).Get(ctx, pullSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		d.fail("--image-pull-secret %s: no such Secret in namespace %s; create it with kubectl create secret docker-registry %s -n %s --docker-server=REGISTRY --docker-username=USER --docker-password=TOKEN", pullSecret, ns, pullSecret, ns)
	case err != nil:
		d.warn("cannot check --image-pull-secret %s: %v", pullSecret, err)
	case s.Type != corev1.SecretTypeDockerConfigJson && s.Type != corev1.SecretTypeDockercfg:
		d.fail("--image-pull-secret %s is of type %s; the kubelet pulls only with a %s Secret (kubectl create secret docker-registry)", pullSecret, s.Type, corev1.SecretTypeDockerConfigJson)
	default:
		d.ok("image pull Secret %s/%s is a registry credential", ns, pullSecret)
	}
}

// privileges checks what connect's TUN device needs on this machine.
func (d *doctor) privileges() {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		d.warn("no /dev/net/tun: connect needs the tun module (sudo modprobe tun), or use connect --disable-tun")
	} else if os.Geteuid() != 0 {
		exe, _ := os.Executable()
		switch sudo, err := exec.LookPath("sudo"); {
		case err != nil:
			d.warn("not root and no sudo: connect's TUN device needs one of them (or use connect --disable-tun); other commands do not")
		case exec.Command(sudo, "-n", "-l", exe, netadmin.HelperCommand).Run() == nil:
			d.ok("not root: connect runs its network helper through sudo without a password")
		default:
			d.ok("not root: connect asks sudo (with your password) for its network helper once; to skip the prompt allow '%s %s *' in sudoers", exe, netadmin.HelperCommand)
		}
	} else {
		d.ok("TUN device available and running as root")
	}
}

// routes warns of cluster ranges that local routes overlap.
func (d *doctor) routes(ctx context.Context, client kubernetes.Interface, ns string) {
	if svc, err := inventory.ServiceCIDRs(ctx, client, ns); err == nil {
		pods, _ := inventory.PodCIDRs(ctx, client, ns)
		for _, p := range append(svc, pods...) {
			if over, _ := tun.Overlaps(p, ""); len(over) > 0 {
				d.warn("cluster range %s overlaps local route %s; connect would take it over (exclude it with --exclude-ips)", p, strings.Join(over, ", "))
			} else {
				d.ok("cluster range %s overlaps no local route", p)
			}
		}
	}
}

// resolver checks /etc/resolv.conf, which connect's localDNS forwards to.
func (d *doctor) resolver() {
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		if strings.Contains(string(b), dns.Marker) {
			d.warn("/etc/resolv.conf holds kt's settings: a connect is running, or one crashed (then run 'kubectl kt clean --local-only')")
		} else if rc := dns.ParseResolvConf(b); len(rc.Nameservers) == 0 {
			d.warn("/etc/resolv.conf names no nameserver: other names will not resolve while connected")
		} else {
			d.ok("resolver: %s (connect --dns-mode localDNS forwards other names there)", strings.Join(rc.Nameservers, ", "))
		}
	}
}
