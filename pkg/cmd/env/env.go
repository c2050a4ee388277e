// Package env implements `kubectl kt env`.
package env

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/envvars"
	"github.com/kubectl-kt/kt/pkg/forward"
)

// Options holds the flags of env.
type Options struct {
	Target    string
	Container string
	Output    string

	namespace string
	client    kubernetes.Interface
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Output: "dotenv", IOStreams: streams}
}

// NewCmdEnv returns the env command.
func NewCmdEnv(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "env (svc/NAME | deploy/NAME | sts/NAME | pod/NAME | NAME)",
		Short: "Print the environment a workload's container gets, to run the same process locally",
		Long: `Env prints the variables that a running pod's container gets from its spec: env and envFrom,
with ConfigMap and Secret values read from the cluster, downward-API fields and resources
filled in from the pod, and $(VAR) references expanded, in the kubelet's order. Secret
values are printed as they are: write them to a file only you can read. Variables the
kubelet adds by itself (the Services' *_SERVICE_HOST and the like) are not in the spec and
not printed: with connect running, the names they stand for resolve anyway.`,
		Example: `  kubectl kt env deploy/web > .env                 # for your IDE's run configuration
  eval "$(kubectl kt env svc/web -o sh)" && go run ./cmd/web
  kubectl kt env sts/db -c db -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, args[0]); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Container, "container", "c", o.Container, "Container of the pod (default: its first).")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Format: dotenv (KEY=value lines), sh (export lines to eval) or json.")
	return cmd
}

// Complete builds the client.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, target string) error {
	o.Target = target
	var err error
	o.namespace, _, o.client, err = kube.Clients(f)
	return err
}

// Validate checks the output format; it changes nothing.
func (o *Options) Validate() error {
	if !slices.Contains(envvars.Formats, o.Output) {
		return fmt.Errorf("-o %q: use one of %s", o.Output, strings.Join(envvars.Formats, ", "))
	}
	return nil
}

// Run prints the environment of the target's running pod.
func (o *Options) Run(ctx context.Context) error {
	pod, err := forward.RunningPod(ctx, o.client, o.namespace, o.Target)
	if err != nil {
		return err
	}
	r := &envvars.Resolver{Client: o.client}
	vars, warnings, err := r.Resolve(ctx, pod, o.Container)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(o.ErrOut, "warning: %s\n", w)
	}
	return envvars.Write(o.Out, vars, o.Output)
}
