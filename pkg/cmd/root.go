// Package cmd builds the kubectl kt command tree: the root command with kubectl's flags, the
// mapping from errors to exit codes, and the registration of every subcommand.
package cmd

import (
	"flag"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cmd/birdseye"
	"github.com/kubectl-kt/kt/pkg/cmd/clean"
	"github.com/kubectl-kt/kt/pkg/cmd/completion"
	ktconfig "github.com/kubectl-kt/kt/pkg/cmd/config"
	"github.com/kubectl-kt/kt/pkg/cmd/connect"
	"github.com/kubectl-kt/kt/pkg/cmd/doctor"
	"github.com/kubectl-kt/kt/pkg/cmd/env"
	"github.com/kubectl-kt/kt/pkg/cmd/exchange"
	"github.com/kubectl-kt/kt/pkg/cmd/forward"
	"github.com/kubectl-kt/kt/pkg/cmd/mesh"
	"github.com/kubectl-kt/kt/pkg/cmd/mirror"
	mountcmd "github.com/kubectl-kt/kt/pkg/cmd/mount"
	netadmincmd "github.com/kubectl-kt/kt/pkg/cmd/netadmin"
	"github.com/kubectl-kt/kt/pkg/cmd/preview"
	"github.com/kubectl-kt/kt/pkg/cmd/recover"
	"github.com/kubectl-kt/kt/pkg/cmd/run"
	"github.com/kubectl-kt/kt/pkg/cmd/status"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/cmd/version"
)

// NewKtCommand returns the root command.
func NewKtCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-kt", // the binary's name, which completion scripts complete; help says "kubectl kt"
		Short: "Develop one microservice on your laptop while it lives in a Kubernetes cluster",
		Long: `kubectl kt joins your laptop to a cluster's network (connect), sends a Service's traffic to a
process on your laptop (exchange, mesh), and exposes local processes inside the cluster (preview).`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl kt"},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetGlobalNormalizationFunc(NormalizeFlagName)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usage.Error{Err: explainShorthand(err)}
	})
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)

	flags := root.PersistentFlags()
	configFlags.AddFlags(flags)
	addKlogFlags(root)

	root.AddCommand(
		connect.NewCmdConnect(configFlags, streams),
		exchange.NewCmdExchange(configFlags, streams),
		mesh.NewCmdMesh(configFlags, streams),
		mirror.NewCmdMirror(configFlags, streams),
		preview.NewCmdPreview(configFlags, streams),
		forward.NewCmdForward(configFlags, streams),
		env.NewCmdEnv(configFlags, streams),
		run.NewCmdRun(configFlags, streams),
		mountcmd.NewCmdMount(configFlags, streams),
		recover.NewCmdRecover(configFlags, streams),
		clean.NewCmdClean(configFlags, streams),
		status.NewCmdStatus(configFlags, streams),
		birdseye.NewCmdBirdseye(configFlags, streams),
		doctor.NewCmdDoctor(configFlags, streams),
		version.NewCmdVersion(configFlags, streams),
	)
	root.AddCommand(ktconfig.NewCmdConfig(root, streams), netadmincmd.NewCmdNetAdmin(streams),
		completion.NewCmdCompletion(root, streams))
	completion.RegisterFlags(root, configFlags)
	for name, kinds := range targetKinds {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			panic("no command " + name) // targetKinds names a command that is gone
		}
		c.ValidArgsFunction = completion.Targets(configFlags, kinds.bare, kinds.kinds...)
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		// API-server warnings (a deprecated API, a PodSecurity audit) read as kubectl's do.
		rest.SetDefaultWarningHandler(rest.NewWarningWriter(streams.ErrOut, rest.WarningWriterOptions{Deduplicate: true}))
		return ktconfig.ApplyDefaults(cmd)
	}
	for _, c := range root.Commands() {
		if c.Args == nil {
			c.Args = cobra.NoArgs
		}
		wrapArgs(c)
	}
	return root
}

// targetKinds says, for each command whose first argument is a TARGET, which KIND/ prefixes it
// takes and whether a bare NAME (a Service) is one.
var targetKinds = map[string]struct {
	bare  bool
	kinds []string
}{
	"env":      {true, []string{"svc", "deploy", "sts", "pod"}},
	"run":      {true, []string{"svc", "deploy", "sts", "pod"}},
	"mount":    {true, []string{"svc", "deploy", "sts", "pod"}},
	"exchange": {true, []string{"svc", "deploy", "sts"}},
	"forward":  {false, []string{"svc", "deploy", "sts", "pod"}},
	"mesh":     {true, []string{"svc", "deploy"}},
	"mirror":   {true, []string{"svc", "deploy"}},
	"recover":  {true, nil},
}

// addKlogFlags exposes klog's -v (and --vmodule) so diagnostics read `kubectl kt -v 4 …`.
func addKlogFlags(root *cobra.Command) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for _, name := range []string{"v", "vmodule"} {
		root.PersistentFlags().AddGoFlag(fs.Lookup(name))
	}
}

// wrapArgs makes cobra's positional-argument errors usage errors (exit 2) that say how to get help.
func wrapArgs(c *cobra.Command) {
	check := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usage.Errorf("%v; see '%s --help'", err, cmd.CommandPath())
		}
		return nil
	}
	for _, sub := range c.Commands() {
		if sub.Args == nil {
			sub.Args = cobra.NoArgs
		}
		wrapArgs(sub)
	}
}

// kt-connect's -i (--image) and -f (--force-update) mean --stdin and --filename to kubectl
// users, so kt has no such shorthands; one given says which long flag was meant.
var oldShorthands = map[string]string{"i": "--image", "f": "--force-update"}

func explainShorthand(err error) error {
	var s string
	if _, e := fmt.Sscanf(err.Error(), "unknown shorthand flag: '%1s'", &s); e != nil {
		return err
	}
	if long, ok := oldShorthands[s]; ok {
		return fmt.Errorf("%w; kt has no -%s (kubectl's -%s means something else): write %s", err, s, s, long)
	}
	return err
}
