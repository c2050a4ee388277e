// Package netadmin implements the hidden `kubectl kt __netadmin` verb: the root helper that
// connect starts through sudo (pkg/netadmin serves it).
package netadmin

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// Options holds the helper's flags, which connect sets.
type Options struct {
	Socket string // the user's Unix socket
	UID    int    // the user's uid, which must own the socket

	genericiooptions.IOStreams
}

// NewOptions returns the defaults: no socket, no uid (both must be given).
func NewOptions(streams genericiooptions.IOStreams) *Options {
	return &Options{UID: -1, IOStreams: streams}
}

// NewCmdNetAdmin is the helper that connect starts through sudo when run as a normal user.
func NewCmdNetAdmin(streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:    netadmin.HelperCommand,
		Short:  "Privileged helper of connect (started through sudo; not for direct use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		// No kt config defaults: this runs as root, on behalf of the user's process.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.Socket, "socket", o.Socket, "the user's Unix socket")
	cmd.Flags().IntVar(&o.UID, "uid", o.UID, "the user's uid, which must own the socket")
	return cmd
}

// Validate checks that both flags are given; ServeHelper checks the socket itself.
func (o *Options) Validate() error {
	if o.Socket == "" || !filepath.IsAbs(o.Socket) {
		return fmt.Errorf("--socket %q: give the absolute path of the user's socket (connect starts this helper; run connect instead)", o.Socket)
	}
	if o.UID < 0 {
		return fmt.Errorf("--uid %d: give the uid of the user who owns the socket (connect starts this helper; run connect instead)", o.UID)
	}
	return nil
}

// Run serves the user's requests until the socket closes.
func (o *Options) Run(context.Context) error {
	return netadmin.ServeHelper(o.Socket, o.UID, o.ErrOut)
}
