// Package recover implements `kubectl kt recover`.
package recover

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/target"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Options holds the state of recover.
type Options struct {
	Service string // the Service's name, from SERVICE

	client    kubernetes.Interface
	namespace string
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{IOStreams: streams}
}

// NewCmdRecover returns the recover command.
func NewCmdRecover(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	return &cobra.Command{
		Use:   "recover SERVICE",
		Short: "Restore a Service that exchange or mesh changed, now",
		Long: `Recover undoes kt's change to a Service at once, whoever made it: its original selector
comes back and kt's lock goes, and the shadow pods of that change are deleted. Use it when a
session is gone and you do not want to wait for its shadow to restore the Service by itself.`,
		Example: "  kubectl kt recover web",
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
}

// Complete builds the client and takes the Service's name from SERVICE (NAME, svc/NAME or
// service/NAME).
func (o *Options) Complete(f genericclioptions.RESTClientGetter, service string) error {
	o.Service = service
	if kind, name, ok := target.ParseRef(service); ok && kind == target.KindService {
		o.Service = name
	}
	var err error
	o.namespace, _, o.client, err = kube.Clients(f)
	return err
}

// Validate checks that SERVICE names a Service; it changes nothing.
func (o *Options) Validate() error {
	if errs := validation.IsDNS1035Label(o.Service); len(errs) > 0 {
		return fmt.Errorf("%q is not a Service name (%s); write NAME or svc/NAME", o.Service, errs[0])
	}
	return nil
}

// Run restores the Service, and the workload behind it if scale mode left it at zero.
func (o *Options) Run(ctx context.Context) error {
	name := o.Service
	svc, err := o.client.CoreV1().Services(o.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("service %s/%s not found; check the name and -n/--namespace", o.namespace, name)
	}
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", o.namespace, name, cluster.Explain(err, "get", "services", o.namespace))
	}
	l, locked := wire.ServiceLock(svc)
	w, err := target.ServiceWorkload(ctx, o.client, svc)
	if err != nil {
		return err
	}
	restored, err := cluster.RestoreService(ctx, o.client, o.namespace, name, "")
	if err != nil {
		return err
	}
	if restored.Kept {
		fmt.Fprintln(o.ErrOut, restored.KeptNote(o.namespace, name))
	}
	scaled := false
	if w != nil && w.Undo != nil {
		back := *w
		back.Replicas = w.Undo.Replicas
		if err := cluster.ScaleBack(ctx, o.client, o.namespace, &back); err != nil {
			return err
		}
		scaled = true
		fmt.Fprintf(o.Out, "%s %s/%s scaled back to %d replicas (scale mode left it at zero)\n", strings.ToLower(w.Kind), o.namespace, w.Name, back.Replicas)
	}
	if !restored.Changed {
		if !scaled {
			fmt.Fprintf(o.Out, "service %s/%s is not changed by kt; nothing to recover\n", o.namespace, name)
		}
		return nil
	}
	if locked && l.Session != "" {
		fmt.Fprintf(o.Out, "service %s/%s restored (it was %s by %s)\n", o.namespace, name, wire.Done(l.Role), l.Owner)
		return cluster.DeleteExchangeObjects(ctx, o.client, o.namespace, l.Session)
	}
	fmt.Fprintf(o.Out, "service %s/%s restored\n", o.namespace, name)
	return nil
}
