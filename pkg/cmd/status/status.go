// Package status implements `kubectl kt status`.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/tun"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Connect is a connect session on this machine.
type Connect struct {
	connect.State
	Running  bool   `json:"running"`
	TUNUp    bool   `json:"tunUp"`
	Tunnel   string `json:"tunnel"` // healthy, shadow missing, or unknown
	Problems string `json:"problems,omitempty"`
}

// Report is what status prints.
type Report struct {
	Connects []Connect               `json:"connects"`
	Sessions []inventory.ShadowInfo  `json:"sessions"`
	Services []inventory.ServiceInfo `json:"services"`
	Error    string                  `json:"clusterError,omitempty"`
	// LocalError is why this machine's connect state could not be read.
	LocalError string `json:"localError,omitempty"`
}

// Options holds the flags of status.
type Options struct {
	Output        string
	AllNamespaces bool

	client    kubernetes.Interface
	namespace string
	clientErr error // why there is no client: reported, and the exit code is 1
	local     func() (cleaned, running []connect.State, err error)
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{IOStreams: streams, local: func() ([]connect.State, []connect.State, error) {
		return connect.CleanLocal(true, netadmin.Direct{})
	}}
}

// NewCmdStatus returns the status command.
func NewCmdStatus(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this machine's connect and the exchanges, meshes and previews this user holds",
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Complete(f)
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "json or yaml.")
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Look for this user's Services in every namespace.")
	return cmd
}

// Complete builds the client. Without one, status still reports this machine's connect, and
// says why there is nothing from the cluster.
func (o *Options) Complete(f genericclioptions.RESTClientGetter) {
	o.namespace, _, o.client, o.clientErr = kube.Clients(f)
}

// Validate checks the flags.
func (o *Options) Validate() error {
	if o.Output != "" && o.Output != "json" && o.Output != "yaml" {
		return fmt.Errorf("--output %q: use json or yaml, or leave it out", o.Output)
	}
	return nil
}

// Run reports. What it could not read (this machine's state, or the cluster) is in the report
// and makes the exit code 1.
func (o *Options) Run(ctx context.Context) error {
	rep := o.report(ctx)
	if err := o.print(rep); err != nil {
		return err
	}
	var problems []string
	if rep.LocalError != "" {
		problems = append(problems, "this machine's connect state: "+rep.LocalError)
	}
	if rep.Error != "" {
		problems = append(problems, "the cluster: "+rep.Error)
	}
	if len(problems) > 0 {
		return fmt.Errorf("status could not read %s", strings.Join(problems, "; "))
	}
	return nil
}

func (o *Options) report(ctx context.Context) Report {
	var rep Report
	cleaned, running, err := o.local()
	if err != nil {
		rep.LocalError = err.Error()
	}
	for _, st := range running {
		c := Connect{State: st, Running: true, TUNUp: st.TUN == "" || tun.Exists(st.TUN), Tunnel: "unknown"}
		rep.Connects = append(rep.Connects, c)
	}
	for _, st := range cleaned {
		rep.Connects = append(rep.Connects, Connect{State: st, Running: false, Problems: "crashed; run 'kubectl kt clean --local-only'"})
	}
	if o.client == nil {
		if o.clientErr != nil {
			rep.Error = o.clientErr.Error()
		}
		return rep
	}
	var errs []string
	shadows, shadowsErr := inventory.Shadows(ctx, o.client, "")
	if shadowsErr != nil {
		errs = append(errs, shadowsErr.Error())
	}
	alive := map[string]bool{}
	for _, s := range shadows {
		alive[s.Namespace+"/"+s.Pod] = s.Phase == "Running"
		if inventory.Mine(s.Owner) {
			rep.Sessions = append(rep.Sessions, s)
		}
	}
	for i := range rep.Connects {
		if c := &rep.Connects[i]; c.Running && shadowsErr == nil {
			if alive[c.Shadow] {
				c.Tunnel = "healthy"
			} else {
				c.Tunnel, c.Problems = "shadow missing", "the shadow pod is gone; connect replaces it within seconds"
			}
		}
	}
	scope := o.namespace
	if o.AllNamespaces {
		scope = ""
	}
	svcs, err := inventory.Services(ctx, o.client, scope)
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, s := range svcs {
		for _, by := range s.By {
			if inventory.Mine(by) {
				rep.Services = append(rep.Services, s)
				break
			}
		}
	}
	rep.Error = strings.Join(errs, "; ")
	return rep
}

func (o *Options) print(rep Report) error {
	switch o.Output {
	case "json":
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.Out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(b)
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	if len(rep.Connects) == 0 {
		fmt.Fprintln(w, "connect:\tnot running")
	}
	for _, c := range rep.Connects {
		state := "running"
		if !c.Running {
			state = "not running (crashed)"
		}
		fmt.Fprintf(w, "connect:\t%s (pid %d, since %s)\n", state, c.PID, c.Started.Local().Format(time.Kitchen))
		fmt.Fprintf(w, "  cluster:\t%s (context %s, namespace %s)\n", c.Server, c.Context, c.Namespace)
		fmt.Fprintf(w, "  shadow:\t%s (tunnel %s)\n", c.Shadow, c.Tunnel)
		if c.Proxy != "" {
			fmt.Fprintf(w, "  proxy:\tsocks5 %s\n", c.Proxy)
		} else {
			fmt.Fprintf(w, "  routes:\t%v via %s (up: %v)\n", c.Routes, c.TUN, c.TUNUp)
			fmt.Fprintf(w, "  dns:\t%s\n", c.DNSMode)
		}
		if c.Problems != "" {
			fmt.Fprintf(w, "  problem:\t%s\n", c.Problems)
		}
	}
	for _, s := range rep.Services {
		fmt.Fprintf(w, "service %s/%s:\t%s %v\n", s.Namespace, s.Name, s.Status, s.Marks)
	}
	for _, s := range rep.Sessions {
		paused := ""
		if s.Paused {
			paused = " (paused: this client is away, the traffic goes to the original pods)"
		}
		beat := fmt.Sprintf("heartbeat %s ago", time.Since(s.Heartbeat).Round(time.Second))
		if s.Role == wire.RoleRouter {
			// A router stamps no heartbeat of its own: it lives while a mesh or mirror of its
			// Service has a member whose heartbeat is fresh (the service line above).
			beat = "shared by the Service's meshes and mirrors"
		}
		fmt.Fprintf(w, "shadow %s/%s:\t%s, %s, %s%s\n", s.Namespace, s.Pod, s.Role, s.Phase, beat, paused)
	}
	if rep.LocalError != "" {
		fmt.Fprintf(w, "local:\t%s\n", rep.LocalError)
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "cluster:\t%s\n", rep.Error)
	}
	return w.Flush()
}
