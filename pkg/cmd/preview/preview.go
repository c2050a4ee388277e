// Package preview implements `kubectl kt preview`.
package preview

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/preview"
	"github.com/kubectl-kt/kt/pkg/target"
)

// NewCmdPreview returns the preview command.
func NewCmdPreview(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	var expose string
	cfg := preview.Config{Pod: cluster.NewPodOptions(), ErrOut: streams.ErrOut}
	cmd := &cobra.Command{
		Use:   "preview NAME --expose LOCAL:REMOTE[,…]",
		Short: "Expose a process on this machine inside the cluster as a new Service",
		Long: `Preview creates a Service NAME (ClusterIP, or LoadBalancer with --external) whose traffic reaches
the local ports, so pods can call your local build by name. Both are removed on exit.`,
		Example: "  kubectl kt preview web-dev --expose 8080:80",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if errs := validation.IsDNS1035Label(args[0]); len(errs) > 0 {
				return usage.Errorf("service name %q: %s", args[0], errs[0])
			}
			ex, err := target.ParseExpose(expose)
			if err != nil {
				return usage.Wrap(err)
			}
			cfg.Ports = nil
			for _, e := range ex {
				var remote int
				if _, err := fmt.Sscan(e.Remote, &remote); err != nil {
					return usage.Errorf("--expose %d:%s: a preview's REMOTE is the new Service's port number", e.Local, e.Remote)
				}
				cfg.Ports = append(cfg.Ports, preview.Port{Local: e.Local, Remote: remote})
			}
			if err := cfg.Pod.Validate(); err != nil {
				return usage.Wrap(err)
			}
			ns, rc, client, err := kube.Clients(f)
			if err != nil {
				return err
			}
			cfg.RESTConfig, cfg.Client, cfg.Namespace, cfg.Name = rc, client, ns, args[0]
			cfg.Command = kube.CommandLine()
			cmd.SilenceUsage = true
			return preview.Run(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&expose, "expose", "", "LOCAL:REMOTE[,…] or PORT: local ports, and the Service ports that reach them (required).")
	fs.BoolVar(&cfg.External, "external", false, "Create a LoadBalancer Service instead of a ClusterIP one.")
	fs.BoolVar(&cfg.SkipPortChecking, "skip-port-checking", false, "Do not check that the local ports listen.")
	cfg.Pod.AddFlags(fs)
	return cmd
}
