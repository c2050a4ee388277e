// Package forward implements `kubectl kt forward`.
package forward

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/forward"
)

// Options holds the arguments and flags of forward.
type Options struct {
	Target  string
	Ports   []string // [LOCAL:]REMOTE, or one LOCAL after HOST:PORT
	Address string
	Pod     *cluster.PodOptions

	cfg forward.Config
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{Address: "127.0.0.1", Pod: cluster.NewPodOptions(), IOStreams: streams}
}

// NewCmdForward returns the forward command.
func NewCmdForward(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "forward (svc/NAME | deploy/NAME | sts/NAME | pod/NAME) [[LOCAL:]REMOTE...] | HOST:PORT [LOCAL]",
		Short: "Forward a local port to a Service, or to any address the cluster reaches",
		Long: `Forward listens on a local port. For a Service, a Deployment or a StatefulSet it forwards to
a ready pod of it, and to another one when that pod goes away; for pod/NAME to that pod. REMOTE
is the Service's port (number or name) or, for the others, the container port (number or
declared name); without it, the only TCP port there is. Several [LOCAL:]REMOTE go to the
same pod. For HOST:PORT (a name the cluster
resolves, or an address only reachable from inside it) a shadow pod dials it. Needs no root.`,
		Example: `  kubectl kt forward svc/web 8080:80
  kubectl kt forward svc/web 8080:http 9443:https  # several ports, to the same pod
  kubectl kt forward deploy/web 8080            # the container's port 8080, on local port 8080
  kubectl kt forward db.prod.svc.cluster.local:5432 15432
  kubectl kt forward 10.20.30.40:6379`,
		Args: cobra.MinimumNArgs(1),
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
	cmd.Flags().StringVar(&o.Address, "address", o.Address, "Local address to listen on.")
	kube.AddPodFlags(cmd.Flags(), o.Pod)
	return cmd
}

// Complete builds the client and the run's configuration.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, args []string) error {
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.Target, o.Ports = args[0], args[1:]
	o.cfg = forward.Config{RESTConfig: rc, Client: client, Namespace: ns, Target: o.Target, Address: o.Address,
		Pod: o.Pod, Command: kube.CommandLine(), ErrOut: o.ErrOut}
	o.cfg.Ports, _ = parsePorts(o.Target, o.Ports) // unparsable: Validate refuses them
	return nil
}

// Validate checks the ports and flags; it changes nothing.
func (o *Options) Validate() error {
	if _, err := parsePorts(o.Target, o.Ports); err != nil {
		return err
	}
	return o.Pod.Validate()
}

// Run forwards until ctx ends.
func (o *Options) Run(ctx context.Context) error { return forward.Run(ctx, o.cfg) }

// parsePorts reads the [LOCAL:]REMOTE arguments after a KIND/NAME target, or the one LOCAL
// after HOST:PORT.
func parsePorts(target string, args []string) ([]forward.Port, error) {
	localPort := func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return 0, usage.Errorf("local port %q is not a number from 1 to 65535", s)
		}
		return n, nil
	}
	if forward.IsAddress(target) {
		switch len(args) {
		case 0:
			return []forward.Port{{}}, nil
		case 1:
			n, err := localPort(args[0])
			return []forward.Port{{Local: n}}, err
		}
		return nil, usage.Errorf("%s takes one LOCAL port at most; run one forward per address", target)
	}
	if len(args) == 0 {
		return []forward.Port{{}}, nil
	}
	var ports []forward.Port
	locals := map[int]bool{}
	for _, a := range args {
		local, remote, ok := strings.Cut(a, ":")
		if !ok {
			local, remote = "", a
		}
		if remote == "" {
			return nil, usage.Errorf("%q names no remote port; write [LOCAL:]REMOTE", a)
		}
		var p forward.Port
		if local != "" {
			n, err := localPort(local)
			if err != nil {
				return nil, err
			}
			if locals[n] {
				return nil, usage.Errorf("local port %d is given twice", n)
			}
			locals[n] = true
			p.Local = n
		}
		p.Remote = remote
		ports = append(ports, p)
	}
	return ports, nil
}
