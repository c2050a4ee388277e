// Package preview implements `kubectl kt preview`.
package preview

import (
	"context"
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

// Options holds the flags of preview.
type Options struct {
	Name             string
	Expose           string
	External         bool
	SkipPortChecking bool
	Pod              *cluster.PodOptions

	cfg preview.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Pod: cluster.NewPodOptions(), IOStreams: streams}
}

// NewCmdPreview returns the preview command.
func NewCmdPreview(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "preview NAME --expose LOCAL:REMOTE[,…]",
		Short: "Expose a process on this machine inside the cluster as a new Service",
		Long: `Preview creates a Service NAME (ClusterIP, or LoadBalancer with --external) whose traffic reaches
the local ports, so pods can call your local build by name. Both are removed on exit.`,
		Example: "  kubectl kt preview web-dev --expose 8080:80",
		Args:    cobra.ExactArgs(1),
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
	fs := cmd.Flags()
	fs.StringVar(&o.Expose, "expose", "", "LOCAL:REMOTE[,…] or PORT: local ports, and the Service ports that reach them (required).")
	fs.BoolVar(&o.External, "external", false, "Create a LoadBalancer Service instead of a ClusterIP one.")
	fs.BoolVar(&o.SkipPortChecking, "skip-port-checking", false, "Do not check that the local ports listen.")
	kube.AddPodFlags(fs, o.Pod)
	return cmd
}

// Complete builds the client and the run's configuration.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, name string) error {
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.Name = name
	o.cfg = preview.Config{RESTConfig: rc, Client: client, Namespace: ns, Name: name, External: o.External,
		SkipPortChecking: o.SkipPortChecking, Pod: o.Pod, Command: kube.CommandLine(), ErrOut: o.ErrOut}
	o.cfg.Ports, _ = ports(o.Expose) // unparsable: none, and Validate refuses it
	return nil
}

// Validate checks the name and the flags; it changes nothing.
func (o *Options) Validate() error {
	if errs := validation.IsDNS1035Label(o.Name); len(errs) > 0 {
		return fmt.Errorf("service name %q: %s", o.Name, errs[0])
	}
	if _, err := ports(o.Expose); err != nil {
		return err
	}
	return o.Pod.Validate()
}

// Run previews until ctx ends.
func (o *Options) Run(ctx context.Context) error { return preview.Run(ctx, o.cfg) }

// ports parses --expose: a preview's REMOTE is the new Service's port number.
func ports(expose string) ([]preview.Port, error) {
	ex, err := target.ParseExpose(expose)
	if err != nil {
		return nil, err
	}
	var out []preview.Port
	for _, e := range ex {
		var remote int
		if _, err := fmt.Sscan(e.Remote, &remote); err != nil || remote < 1 || remote > 65535 {
			return nil, fmt.Errorf("--expose %d:%s: a preview's REMOTE is the new Service's port number (1-65535)", e.Local, e.Remote)
		}
		out = append(out, preview.Port{Local: e.Local, Remote: remote})
	}
	return out, nil
}
