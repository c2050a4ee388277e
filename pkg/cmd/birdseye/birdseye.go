// Package birdseye implements `kubectl kt birdseye`.
package birdseye

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// NewCmdBirdseye returns the birdseye command.
func NewCmdBirdseye(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	var showConnector, hideNatural bool
	sortBy := "status"
	cmd := &cobra.Command{
		Use:   "birdseye",
		Short: "Show each Service of the namespace and whether it is exchanged, meshed or previewed, and by whom",
		RunE: func(cmd *cobra.Command, args []string) error {
			if sortBy != "status" && sortBy != "name" {
				return usage.Errorf("--sort-by %q: use status or name", sortBy)
			}
			ns, _, client, err := kube.Clients(f)
			if err != nil {
				return err
			}
			cmd.SilenceUsage = true
			svcs, err := inventory.Services(cmd.Context(), client, ns)
			if err != nil {
				return err
			}
			rank := map[string]int{"exchanged": 0, "meshed (auto)": 1, "meshed (manual)": 2, "previewing": 3, "normal": 4}
			sort.SliceStable(svcs, func(i, j int) bool {
				if sortBy == "status" && svcs[i].Status != svcs[j].Status {
					return rank[svcs[i].Status] < rank[svcs[j].Status]
				}
				return svcs[i].Name < svcs[j].Name
			})
			w := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SERVICE\tSTATUS\tBY\tMARKS")
			for _, s := range svcs {
				if hideNatural && s.Status == "normal" {
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Status, strings.Join(s.By, ", "), strings.Join(s.Marks, ", "))
			}
			w.Flush()
			if showConnector {
				shadows, err := inventory.Shadows(cmd.Context(), client, "")
				if err != nil {
					return err
				}
				fmt.Fprintln(streams.Out)
				w = tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CONNECTED\tNAMESPACE\tSHADOW\tLAST HEARTBEAT")
				for _, s := range shadows {
					if s.Role == wire.RoleConnect {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s ago\n", s.Owner, s.Namespace, s.Pod, time.Since(s.Heartbeat).Round(time.Second))
					}
				}
				w.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&showConnector, "show-connector", false, "Also list who runs connect, in every namespace.")
	cmd.Flags().BoolVar(&hideNatural, "hide-natural-service", false, "Only list Services kt changed.")
	cmd.Flags().StringVar(&sortBy, "sort-by", sortBy, "status or name.")
	return cmd
}
