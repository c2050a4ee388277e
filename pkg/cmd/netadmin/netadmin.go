// Package netadmin implements the hidden `kubectl kt __netadmin` verb: the root helper that
// connect starts through sudo (pkg/netadmin serves it).
package netadmin

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// NewCmdNetAdmin is the helper that connect starts through sudo when run as a normal user.
func NewCmdNetAdmin(streams genericiooptions.IOStreams) *cobra.Command {
	var sock string
	var uid int
	cmd := &cobra.Command{
		Use:    netadmin.HelperCommand,
		Short:  "Privileged helper of connect (started through sudo; not for direct use)",
		Hidden: true,
		// No kt config defaults: this runs as root, on behalf of the user's process.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return netadmin.ServeHelper(sock, uid, streams.ErrOut)
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "the user's Unix socket")
	cmd.Flags().IntVar(&uid, "uid", -1, "the user's uid, which must own the socket")
	return cmd
}
