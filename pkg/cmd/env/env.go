// Package env implements `kubectl kt env`.
package env

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/envvars"
	"github.com/kubectl-kt/kt/pkg/forward"
)

// NewCmdEnv returns the env command.
func NewCmdEnv(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	var container, output string
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
			if !slices.Contains(envvars.Formats, output) {
				return usage.Errorf("-o %q: use one of %s", output, strings.Join(envvars.Formats, ", "))
			}
			ns, _, client, err := kube.Clients(f)
			if err != nil {
				return err
			}
			cmd.SilenceUsage = true
			pod, err := forward.RunningPod(cmd.Context(), client, ns, args[0])
			if err != nil {
				return err
			}
			r := &envvars.Resolver{Client: client}
			vars, warnings, err := r.Resolve(cmd.Context(), pod, container)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				fmt.Fprintf(streams.ErrOut, "warning: %s\n", w)
			}
			return envvars.Write(streams.Out, vars, output)
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "Container of the pod (default: its first).")
	cmd.Flags().StringVarP(&output, "output", "o", "dotenv", "Format: dotenv (KEY=value lines), sh (export lines to eval) or json.")
	return cmd
}
