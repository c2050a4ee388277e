// Package exchange implements `kubectl kt exchange`.
package exchange

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/exchange"
	"github.com/kubectl-kt/kt/pkg/target"
)

// Options holds the flags of exchange.
type Options struct {
	Expose           string
	Mode             string
	SkipPortChecking bool
	RecoverWaitTime  time.Duration
	Pod              *cluster.PodOptions

	cfg exchange.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Mode: exchange.ModeSelector, RecoverWaitTime: 120 * time.Second, Pod: cluster.NewPodOptions(), IOStreams: streams}
}

// NewCmdExchange returns the exchange command.
func NewCmdExchange(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "exchange (svc/NAME | deploy/NAME | sts/NAME | NAME) --expose LOCAL:REMOTE[,…]",
		Short: "Send all of a Service's in-cluster traffic to processes on this machine",
		Long: `Exchange puts a shadow pod in the place of a Service's pods: every connection to the Service
(by name or ClusterIP) reaches the local port instead. REMOTE is a Service port, a target port or
a port name; PORT alone means the same port on both sides. Ctrl-C restores the Service first,
then deletes the shadow. Needs no root.`,
		Example: `  kubectl kt exchange web --expose 8080:80
  kubectl kt exchange deploy/api --expose 8080:http,9090
  kubectl kt exchange svc/web --expose 8080 --mode scale`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, args[0]); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return exchange.Run(cmd.Context(), o.cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Expose, "expose", "", "LOCAL:REMOTE[,LOCAL:REMOTE…] or PORT: local ports that receive the Service's traffic (required).")
	fs.StringVar(&o.Mode, "mode", o.Mode, "selector (switch the Service's selector to the shadow; no pod restarts) or scale (scale the workload to 0 and back).")
	fs.BoolVar(&o.SkipPortChecking, "skip-port-checking", false, "Do not check that the local ports listen.")
	kube.DurationVar(fs, &o.RecoverWaitTime, "recover-wait-time", o.RecoverWaitTime, "In scale mode, how long to wait on exit for the workload to be ready again.")
	kube.AddPodFlags(fs, o.Pod)
	kube.AddFallbackFlag(fs, o.Pod)
	return cmd
}

// Config is the configuration Complete built, for kubectl kt run.
func (o *Options) Config() exchange.Config { return o.cfg }

// Validate checks the flags; it changes nothing.
func (o *Options) Validate() error {
	if _, err := target.ParseExpose(o.Expose); err != nil {
		return err
	}
	switch o.Mode {
	case exchange.ModeSelector, exchange.ModeScale:
	case exchange.ModeEphemeral:
		return fmt.Errorf("--mode ephemeral is not offered: an ephemeral container can never be removed from a pod, so the pod would have to be deleted to undo it; use selector (the default) or scale")
	default:
		return fmt.Errorf("--mode %q: use selector or scale", o.Mode)
	}
	if o.RecoverWaitTime < 0 {
		return fmt.Errorf("--recover-wait-time must not be negative")
	}
	if err := o.Pod.Validate(); err != nil {
		return err
	}
	return o.Pod.ValidateFallback()
}

// Complete builds the client.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, tgt string) error {
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.cfg.RESTConfig, o.cfg.Client, o.cfg.Namespace, o.cfg.Target = rc, client, ns, tgt
	o.cfg.Expose, _ = target.ParseExpose(o.Expose) // an unparsable one stays empty for Validate to refuse
	o.cfg.Mode, o.cfg.SkipPortChecking, o.cfg.RecoverWaitTime, o.cfg.Pod = o.Mode, o.SkipPortChecking, o.RecoverWaitTime, o.Pod
	o.Pod.CompleteFallback()
	o.cfg.Command = kube.CommandLine()
	o.cfg.ErrOut = o.ErrOut
	return nil
}
