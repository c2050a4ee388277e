// Package mount implements `kubectl kt mount`: a workload's files in a local directory, kept
// current until Ctrl-C, for processes that an IDE starts.
package mount

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/envvars"
	"github.com/kubectl-kt/kt/pkg/forward"
	"github.com/kubectl-kt/kt/pkg/mount"
)

// Options holds the flags of mount.
type Options struct {
	Target    string
	Dir       string
	Container string
	Token     bool
	// RefreshInterval is how often the files are brought up to date.
	RefreshInterval time.Duration

	namespace string
	client    kubernetes.Interface
	stateDir  string
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{RefreshInterval: 2 * time.Second, stateDir: connect.StateDir(), IOStreams: streams}
}

// NewCmdMount returns the mount command.
func NewCmdMount(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "mount (svc/NAME | deploy/NAME | sts/NAME | pod/NAME | NAME) [DIR]",
		Short: "Copy a workload's ConfigMap, Secret and downward-API files to a local directory and keep them current",
		Long: `Mount copies the files the workload's container sees through its ConfigMap, Secret,
downward-API and projected volumes into DIR (new or empty; default a new private temporary
directory) at their mount paths, read-only, and keeps them current until Ctrl-C, which removes
them. Point your IDE's run configuration at them; 'kubectl kt run' does this by itself.`,
		Example: `  kubectl kt mount deploy/api ./.kt-files     # ./.kt-files/etc/config/app.yaml
  kubectl kt mount svc/web -c web`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Container, "container", "c", "", "Container of the pod (default: the one kubectl.kubernetes.io/default-container names, else the first).")
	cmd.Flags().BoolVar(&o.Token, "with-service-account-token", false, "Copy projected service account tokens too (a credential).")
	return cmd
}

// Complete reads the arguments and builds the client.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, args []string) error {
	o.Target = args[0]
	if len(args) > 1 {
		o.Dir = args[1]
	}
	var err error
	o.namespace, _, o.client, err = kube.Clients(f)
	return err
}

// Validate checks the arguments; it changes nothing.
func (o *Options) Validate() error {
	if kind, _, ok := strings.Cut(o.Target, "/"); ok {
		switch kind {
		case "svc", "service", "deploy", "deployment", "sts", "statefulset", "pod":
		default:
			return fmt.Errorf("target %q: write svc/NAME, deploy/NAME, sts/NAME, pod/NAME or a Service NAME", o.Target)
		}
	}
	if o.RefreshInterval <= 0 {
		return fmt.Errorf("the refresh interval must be positive")
	}
	return nil
}

// Run copies the files and keeps them current until ctx ends, then removes them.
func (o *Options) Run(ctx context.Context) (err error) {
	pod, err := forward.RunningPod(ctx, o.client, o.namespace, o.Target)
	if err != nil {
		return err
	}
	c := envvars.FindContainer(pod, o.Container)
	if c == nil {
		return fmt.Errorf("pod %s has no container %q", pod.Name, o.Container)
	}
	r := &mount.Resolver{Client: o.client, ServiceAccountToken: o.Token}
	ms, skipped, err := r.Resolve(ctx, pod, c.Name)
	if err != nil {
		return err
	}
	d, err := mount.Open(o.Dir, o.stateDir)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil {
			err = fmt.Errorf("remove %s: %w; run 'kubectl kt clean --local-only'", d.Root, cerr)
		}
	}()
	if _, err := d.Write(ms); err != nil {
		return err
	}
	for _, s := range skipped {
		fmt.Fprintf(o.ErrOut, "warning: not copied: %s\n", s)
	}
	var paths []string
	for _, m := range ms {
		paths = append(paths, m.Path)
	}
	fmt.Fprintf(o.ErrOut, "Mounted the files of pod %s/%s container %s in %s: %s. Ctrl-C to remove them.\n",
		pod.Namespace, pod.Name, c.Name, d.Root, strings.Join(paths, ", "))
	fmt.Fprintln(o.Out, d.Root)
	d.Keep(ctx, r, pod, c.Name, o.RefreshInterval, o.ErrOut)
	return nil
}
