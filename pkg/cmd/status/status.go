// Package status implements `kubectl kt status`.
package status

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/tun"
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
	Connects []Connect             `json:"connects"`
	Sessions []cluster.ShadowInfo  `json:"sessions"`
	Services []cluster.ServiceInfo `json:"services"`
	Error    string                `json:"clusterError,omitempty"`
}

// NewCmdStatus returns the status command.
func NewCmdStatus(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this machine's connect and the exchanges, meshes and previews this user holds",
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return usage.Errorf("--output %q: use json or yaml, or leave it out", output)
			}
			cmd.SilenceUsage = true
			ctx := cmd.Context()
			var rep Report
			cleaned, running, _ := connect.CleanLocal(true, netadmin.Direct{})
			var client kubernetes.Interface
			ns, _, _ := f.ToRawKubeConfigLoader().Namespace()
			if rc, err := f.ToRESTConfig(); err == nil {
				client, _ = kubernetes.NewForConfig(rc)
			}
			for _, st := range running {
				c := Connect{State: st, Running: true, TUNUp: st.TUN == "" || tun.Exists(st.TUN), Tunnel: "unknown"}
				rep.Connects = append(rep.Connects, c)
			}
			for _, st := range cleaned {
				rep.Connects = append(rep.Connects, Connect{State: st, Running: false, Problems: "crashed; run 'kubectl kt clean --local-only'"})
			}
			if client != nil {
				scope := ns
				if all {
					scope = ""
				}
				shadows, err := cluster.Shadows(ctx, client, "")
				if err != nil {
					rep.Error = err.Error()
				}
				alive := map[string]bool{}
				for _, s := range shadows {
					alive[s.Namespace+"/"+s.Pod] = s.Phase == "Running"
					if cluster.Mine(s.Owner) {
						rep.Sessions = append(rep.Sessions, s)
					}
				}
				for i := range rep.Connects {
					if c := &rep.Connects[i]; c.Running {
						if alive[c.Shadow] {
							c.Tunnel = "healthy"
						} else {
							c.Tunnel, c.Problems = "shadow missing", "the shadow pod is gone; connect replaces it within seconds"
						}
					}
				}
				svcs, err := cluster.Services(ctx, client, scope)
				if err == nil {
					for _, s := range svcs {
						for _, by := range s.By {
							if cluster.Mine(by) {
								rep.Services = append(rep.Services, s)
								break
							}
						}
					}
				}
			}
			switch output {
			case "json":
				b, _ := json.MarshalIndent(rep, "", "  ")
				fmt.Fprintln(streams.Out, string(b))
				return nil
			case "yaml":
				b, _ := yaml.Marshal(rep)
				streams.Out.Write(b)
				return nil
			}
			w := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
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
				fmt.Fprintf(w, "shadow %s/%s:\t%s, %s, heartbeat %s ago\n", s.Namespace, s.Pod, s.Role, s.Phase, time.Since(s.Heartbeat).Round(time.Second))
			}
			if rep.Error != "" {
				fmt.Fprintf(w, "cluster:\t%s\n", rep.Error)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml.")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "Look for this user's Services in every namespace.")
	return cmd
}
