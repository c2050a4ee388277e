// Package birdseye implements `kubectl kt birdseye`.
package birdseye

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Options holds the flags of birdseye.
type Options struct {
	ShowConnector bool
	HideNatural   bool
	SortBy        string

	namespace string
	client    kubernetes.Interface
	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{SortBy: "status", IOStreams: streams}
}

// NewCmdBirdseye returns the birdseye command.
func NewCmdBirdseye(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "birdseye",
		Short: "Show each Service of the namespace and whether it is exchanged, meshed or previewed, and by whom",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.ShowConnector, "show-connector", o.ShowConnector, "Also list who runs connect, in every namespace.")
	cmd.Flags().BoolVar(&o.HideNatural, "hide-natural-service", o.HideNatural, "Only list Services kt changed.")
	cmd.Flags().StringVar(&o.SortBy, "sort-by", o.SortBy, "status or name.")
	return cmd
}

// Complete builds the client.
func (o *Options) Complete(f genericclioptions.RESTClientGetter) error {
	var err error
	o.namespace, _, o.client, err = kube.Clients(f)
	return err
}

// Validate checks --sort-by; it changes nothing.
func (o *Options) Validate() error {
	if o.SortBy != "status" && o.SortBy != "name" {
		return fmt.Errorf("--sort-by %q: use status or name", o.SortBy)
	}
	return nil
}

// rank orders the statuses: the changed Services first.
var rank = map[string]int{"exchanged": 0, "meshed (auto)": 1, "meshed (manual)": 2, "previewing": 3, "normal": 4}

// Run prints the table.
func (o *Options) Run(ctx context.Context) error {
	svcs, err := inventory.Services(ctx, o.client, o.namespace)
	if err != nil {
		return err
	}
	sort.SliceStable(svcs, func(i, j int) bool {
		if o.SortBy == "status" && svcs[i].Status != svcs[j].Status {
			return rank[svcs[i].Status] < rank[svcs[j].Status]
		}
		return svcs[i].Name < svcs[j].Name
	})
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tSTATUS\tBY\tMARKS")
	for _, s := range svcs {
		if o.HideNatural && s.Status == "normal" {
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Status, strings.Join(s.By, ", "), strings.Join(s.Marks, ", "))
	}
	w.Flush()
	if !o.ShowConnector {
		return nil
	}
	shadows, err := inventory.Shadows(ctx, o.client, "")
	if err != nil {
		return err
	}
	fmt.Fprintln(o.Out)
	w = tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONNECTED\tNAMESPACE\tSHADOW\tLAST HEARTBEAT")
	for _, s := range shadows {
		if s.Role == wire.RoleConnect {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s ago\n", s.Owner, s.Namespace, s.Pod, time.Since(s.Heartbeat).Round(time.Second))
		}
	}
	return w.Flush()
}
