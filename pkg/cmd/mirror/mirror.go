// Package mirror implements `kubectl kt mirror`.
package mirror

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/mesh"
	"github.com/kubectl-kt/kt/pkg/target"
)

// Options holds the flags of mirror.
type Options struct {
	Expose           string
	VersionMark      string
	PathPrefix       string
	SkipPortChecking bool
	PodProxy         bool
	RouterImage      string
	Pod              *cluster.PodOptions

	cfg mesh.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Pod: cluster.NewPodOptions(), IOStreams: streams}
}

// NewCmdMirror returns the mirror command.
func NewCmdMirror(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "mirror (svc/NAME | deploy/NAME | NAME) --expose LOCAL:REMOTE[,…] [--version-mark KEY:VALUE] [--path-prefix /P]",
		Short: "Get a copy of a Service's requests on this machine; the cluster's pods still answer every one",
		Long: `Mirror sends a copy of each request to the Service (or only of those with the header
--version-mark names, or under --path-prefix) to the local port; the answers of the local
server are read and dropped, and every request is answered by the original pods as without kt.
A copy never slows an original: when this machine is slow or away, copies are dropped and
counted ('kubectl kt status'). Bodies are copied up to 1 MiB; a longer one is cut and marked
with the header X-Kt-Mirror-Truncated. Mirrors and meshes of one Service share its router.`,
		Example: `  kubectl kt mirror web --expose 8080:80
  kubectl kt mirror web --expose 8080:80 --path-prefix /api/ --version-mark tenant:acme`,
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
	fs.StringVar(&o.Expose, "expose", "", "LOCAL:REMOTE[,…] or PORT: local ports that receive the copies (required).")
	fs.StringVar(&o.VersionMark, "version-mark", "", "KEY:VALUE: copy only requests with this header (default: every request).")
	fs.StringVar(&o.PathPrefix, "path-prefix", "", "Copy only requests whose path starts with this (e.g. /api/).")
	fs.BoolVar(&o.SkipPortChecking, "skip-port-checking", false, "Do not check that the local ports listen.")
	fs.BoolVar(&o.PodProxy, "pod-proxy", true, "Take the copies through the API server's pod proxy, which dials the shadow pod itself; false, or where pods/proxy is refused: through the port-forward, which the kubelet and the container runtime relay on the node.")
	fs.StringVar(&o.RouterImage, "router-image", "", "Image of the router (default: the shadow image; it plays both roles).")
	kube.AddPodFlags(fs, o.Pod)
	return cmd
}

// Complete builds the client and the run's configuration (an unparsable flag stays empty
// for Validate to refuse).
func (o *Options) Complete(f genericclioptions.RESTClientGetter, tgt string) error {
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.cfg = mesh.Config{RESTConfig: rc, Client: client, Namespace: ns, Target: tgt, Mode: mesh.ModeAuto, Mirror: true,
		PathPrefix: o.PathPrefix, SkipPortChecking: o.SkipPortChecking, PodProxy: o.PodProxy, RouterImage: o.RouterImage, Pod: o.Pod,
		Command: kube.CommandLine(), ErrOut: o.ErrOut}
	o.cfg.Pod.FallbackAfter = 0 // a copy must never reach the original pods
	o.cfg.Expose, _ = target.ParseExpose(o.Expose)
	if o.VersionMark != "" {
		o.cfg.Key, o.cfg.Value, _ = mesh.ParseVersionMark(o.VersionMark)
	}
	return nil
}

// Config is the run's configuration, once Complete has built it.
func (o *Options) Config() mesh.Config { return o.cfg }

// Validate checks the flags; it changes nothing.
func (o *Options) Validate() error {
	if o.Expose == "" {
		return errors.New("--expose is required: the local port that receives the copies, e.g. --expose 8080:80")
	}
	if _, err := target.ParseExpose(o.Expose); err != nil {
		return err
	}
	if o.VersionMark != "" {
		if k, v, ok := strings.Cut(o.VersionMark, ":"); !ok || k == "" || v == "" {
			return fmt.Errorf("--version-mark %q: give KEY:VALUE, the header a request must carry to be copied", o.VersionMark)
		}
		if _, _, err := mesh.ParseVersionMark(o.VersionMark); err != nil {
			return err
		}
	}
	if p := o.PathPrefix; p != "" && (!strings.HasPrefix(p, "/") || len(p) > 256 || strings.ContainsAny(p, " ?#\t\r\n")) {
		return fmt.Errorf("--path-prefix %q: give a path that starts with / (at most 256 characters, no spaces, ? or #)", p)
	}
	return o.Pod.Validate()
}
