// Package version implements `kubectl kt version`.
package version

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/version"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Info is what `kubectl kt version` reports.
type Info struct {
	Version         string `json:"version"`
	Commit          string `json:"commit"`
	ShadowImage     string `json:"shadowImage"`
	ProtocolVersion int    `json:"protocolVersion"`
	ServerVersion   string `json:"serverVersion,omitempty"`
	ServerError     string `json:"serverError,omitempty"`
}

// Options holds the flags of the version command.
type Options struct {
	ClientOnly bool
	Output     string

	// ServerVersion returns the cluster's version; nil when ClientOnly.
	ServerVersion func(context.Context) (string, error)

	genericiooptions.IOStreams
}

// NewOptions returns Options with every default.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{IOStreams: streams}
}

// NewCmdVersion returns the version command.
func NewCmdVersion(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version, the shadow image it uses, and the cluster's version",
		Example: `  kubectl kt version
  kubectl kt version --client -o json`,
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
	cmd.Flags().BoolVar(&o.ClientOnly, "client", o.ClientOnly, "Print the client version only; do not contact the cluster.")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: one of '', json, yaml.")
	return cmd
}

// Complete builds the discovery client unless only the client version is wanted.
func (o *Options) Complete(f genericclioptions.RESTClientGetter) error {
	if o.ClientOnly {
		return nil
	}
	o.ServerVersion = func(ctx context.Context) (string, error) {
		cfg, err := f.ToRESTConfig()
		if err != nil {
			return "", err
		}
		cfg.Timeout = 5 * time.Second
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return "", err
		}
		v, err := dc.ServerVersion()
		if err != nil {
			return "", err
		}
		return v.GitVersion, nil
	}
	return nil
}

// Validate checks the output format.
func (o *Options) Validate() error {
	switch o.Output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q is not supported; use json or yaml, or leave it out", o.Output)
}

// Run prints the version.
func (o *Options) Run(ctx context.Context) error {
	info := Info{
		Version:         version.Version,
		Commit:          version.Commit,
		ShadowImage:     version.ShadowImage(),
		ProtocolVersion: wire.ProtocolVersion,
	}
	if o.ServerVersion != nil {
		if v, err := o.ServerVersion(ctx); err != nil {
			info.ServerError = err.Error()
		} else {
			info.ServerVersion = v
		}
	}
	switch o.Output {
	case "json":
		b, err := json.MarshalIndent(info, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.Out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(info)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(b)
		return err
	}
	fmt.Fprintf(o.Out, "Client Version: %s (commit %s)\n", info.Version, info.Commit)
	fmt.Fprintf(o.Out, "Shadow Image: %s\n", info.ShadowImage)
	switch {
	case info.ServerVersion != "":
		fmt.Fprintf(o.Out, "Server Version: %s\n", info.ServerVersion)
	case info.ServerError != "":
		fmt.Fprintf(o.ErrOut, "warning: cannot reach the cluster: %s\n", info.ServerError)
	}
	return nil
}
