// Package mesh implements `kubectl kt mesh`.
package mesh

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/mesh"
	"github.com/kubectl-kt/kt/pkg/target"
)

// Options holds the flags of mesh.
type Options struct {
	Expose           string
	Mode             string
	VersionMark      string
	SkipPortChecking bool
	RouterImage      string
	Pod              *cluster.PodOptions

	cfg mesh.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Mode: mesh.ModeAuto, Pod: cluster.NewPodOptions(), IOStreams: streams}
}

// NewCmdMesh returns the mesh command.
func NewCmdMesh(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "mesh (svc/NAME | deploy/NAME | NAME) --expose LOCAL:REMOTE[,…] [--version-mark KEY:VALUE]",
		Short: "Send only requests with your header mark to this machine; everyone else keeps the cluster's pods",
		Long: `Mesh routes by header: requests carrying your mark (default header "version" with a random value,
printed at start) reach the local port; all other requests go to the original pods. Several
developers can mesh one Service at once, each with their own mark (and even their own header);
the last one out restores the Service. HTTP/1.1, WebSocket, streaming responses, HTTP/2
cleartext and gRPC (the mark as metadata) are routed per request; TLS passes through to the
original pods. --mode manual only starts a shadow labelled KEY=VALUE, for Istio or another mesh.`,
		Example: `  kubectl kt mesh web --expose 8080:80 --version-mark version:dev1
  curl -H 'version: dev1' http://web     # from inside the cluster: reaches your laptop`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, args[0]); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return mesh.Run(cmd.Context(), o.cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Expose, "expose", "", "LOCAL:REMOTE[,…] or PORT: local ports that receive the marked requests (required).")
	fs.StringVar(&o.Mode, "mode", o.Mode, "auto (a router routes by header) or manual (only a shadow labelled KEY=VALUE).")
	fs.StringVar(&o.VersionMark, "version-mark", "", "KEY:VALUE, VALUE, or KEY: the header (default key \"version\", default value random).")
	fs.BoolVar(&o.SkipPortChecking, "skip-port-checking", false, "Do not check that the local ports listen.")
	fs.StringVar(&o.RouterImage, "router-image", "", "Image of the router (default: the shadow image; it plays both roles).")
	kube.AddPodFlags(fs, o.Pod)
	kube.AddFallbackFlag(fs, o.Pod)
	return cmd
}

// Complete builds the client and parses the flags into the run's configuration.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, target string) error {
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.complete(target)
	o.cfg.RESTConfig, o.cfg.Client, o.cfg.Namespace = rc, client, ns
	return nil
}

// complete fills what needs no cluster: the parsed flags (an unparsable one stays empty for
// Validate to refuse).
func (o *Options) complete(tgt string) {
	o.cfg.Target, o.cfg.Mode, o.cfg.SkipPortChecking, o.cfg.RouterImage, o.cfg.Pod = tgt, o.Mode, o.SkipPortChecking, o.RouterImage, o.Pod
	o.cfg.Expose, _ = target.ParseExpose(o.Expose)
	o.cfg.Key, o.cfg.Value, _ = mesh.ParseVersionMark(o.VersionMark)
	o.Pod.CompleteFallback()
	o.cfg.Command = kube.CommandLine()
	o.cfg.ErrOut = o.ErrOut
}

// Config is the configuration Complete built, for kubectl kt run.
func (o *Options) Config() mesh.Config { return o.cfg }

// Validate checks the flags; it changes nothing.
func (o *Options) Validate() error {
	if _, err := target.ParseExpose(o.Expose); err != nil {
		return err
	}
	if o.Mode != mesh.ModeAuto && o.Mode != mesh.ModeManual {
		return fmt.Errorf("--mode %q: use auto or manual", o.Mode)
	}
	if _, _, err := mesh.ParseVersionMark(o.VersionMark); err != nil {
		return err
	}
	if err := o.Pod.Validate(); err != nil {
		return err
	}
	return o.Pod.ValidateFallback()
}
