// Package config implements `kubectl kt config`: defaults for any flag, and profiles.
package config

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/config"
)

// lookup finds the flag a key names: GROUP is a command name or "global" (any command's flag).
func lookup(root *cobra.Command, key string) (*pflag.Flag, error) {
	g, item, err := config.Split(key)
	if err != nil {
		return nil, err
	}
	item = string(root.GlobalNormalizationFunc()(nil, item))
	if g == "global" {
		if f := root.PersistentFlags().Lookup(item); f != nil {
			return f, nil
		}
		for _, c := range root.Commands() {
			if f := c.Flags().Lookup(item); f != nil {
				return f, nil
			}
		}
		return nil, fmt.Errorf("%q: no command has a flag --%s", key, item)
	}
	for _, c := range root.Commands() {
		if c.Name() == g {
			if f := c.Flags().Lookup(item); f != nil {
				return f, nil
			}
			if f := root.PersistentFlags().Lookup(item); f != nil {
				return f, nil
			}
			return nil, fmt.Errorf("%q: kubectl kt %s has no flag --%s", key, g, item)
		}
	}
	return nil, fmt.Errorf("%q: no command %q (use a command name or global)", key, g)
}

// NewCmdConfig returns the config command; root is the command tree whose flags it sets.
func NewCmdConfig(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show, set and unset defaults for any flag, and save them as profiles",
		Long: `Defaults live in ~/.kt/config as {group: {item: value}}: GROUP is a command (connect, exchange,
mesh, …) or global, ITEM a flag name. A flag given on the command line always wins.`,
		Example: `  kubectl kt config set connect.dns-mode hosts
  kubectl kt config set global.image=registry.example.com/kt/shadow:v1
  kubectl kt config save-profile team-a`,
	}
	cmd.AddCommand(newCmdShow(root, streams), newCmdGet(root, streams), newCmdSet(root, streams), newCmdUnset(),
		newCmdSaveProfile(streams), newCmdLoadProfile(), newCmdListProfile(streams), newCmdDropProfile())
	return cmd
}

func newCmdShow(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use: "show", Short: "Print the configured defaults (--all: every key that can be set)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := config.Load()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			defer w.Flush()
			if !all {
				for _, k := range c.Keys() {
					v, _ := c.Get(k)
					fmt.Fprintf(w, "%s\t%s\n", k, v)
				}
				return nil
			}
			printAll(w, root, c)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "List every key, with its value or default.")
	return cmd
}

func newCmdGet(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use: "get KEY...", Short: "Print configured values", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, k := range args {
				if _, err := lookup(root, k); err != nil {
					return usage.Wrap(err)
				}
			}
			c, err := config.Load()
			if err != nil {
				return err
			}
			for _, k := range args {
				v, ok := c.Get(k)
				if !ok {
					v = "(not set)"
				}
				fmt.Fprintf(streams.Out, "%s = %s\n", k, v)
			}
			return nil
		},
	}
}

// parseSet reads set's arguments: KEY=VALUE, KEY VALUE or KEY = VALUE.
func parseSet(args []string) (key, value string, err error) {
	switch {
	case len(args) == 1:
		k, v, ok := strings.Cut(args[0], "=")
		if !ok {
			return "", "", fmt.Errorf("set %q: write KEY=VALUE or KEY VALUE", args[0])
		}
		return k, v, nil
	case len(args) == 3 && args[1] == "=":
		return args[0], args[2], nil
	case len(args) == 2:
		return args[0], args[1], nil
	}
	return "", "", fmt.Errorf("write KEY=VALUE, KEY VALUE or KEY = VALUE")
}

func newCmdSet(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use: "set KEY VALUE | KEY=VALUE", Short: "Set a default", Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, v, err := parseSet(args)
			if err != nil {
				return usage.Wrap(err)
			}
			f, err := lookup(root, k)
			if err != nil {
				return usage.Wrap(err)
			}
			if err := f.Value.Set(v); err != nil {
				return usage.Errorf("%s = %q: not a valid value for --%s: %v", k, v, f.Name, err)
			}
			g, _, _ := config.Split(k)
			k = g + "." + f.Name // the flag's own spelling, whatever alias was typed
			c, err := config.Load()
			if err != nil {
				return err
			}
			c.Set(k, v)
			if err := c.Save(); err != nil {
				return err
			}
			fmt.Fprintf(streams.ErrOut, "%s = %s\n", k, v)
			return nil
		},
	}
}

func newCmdUnset() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use: "unset KEY... | --all", Short: "Remove defaults",
		RunE: func(cmd *cobra.Command, args []string) error {
			if !all && len(args) == 0 {
				return usage.Errorf("name the keys to unset, or pass --all")
			}
			c, err := config.Load()
			if err != nil {
				return err
			}
			if all {
				return config.Config{}.Save()
			}
			for _, k := range args {
				if err := c.Unset(k); err != nil {
					return usage.Wrap(err)
				}
			}
			return c.Save()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Remove every default.")
	return cmd
}

func newCmdSaveProfile(streams genericiooptions.IOStreams) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "save-profile NAME", Short: "Save the current defaults as a profile", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.SaveProfile(args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(streams.ErrOut, "saved profile %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "Overwrite an existing profile.")
	return cmd
}

func newCmdLoadProfile() *cobra.Command {
	return &cobra.Command{
		Use: "load-profile NAME", Short: "Replace the current defaults with a profile", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return config.LoadProfile(args[0]) },
	}
}

func newCmdListProfile(streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use: "list-profile", Short: "List the profiles", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := config.ListProfiles()
			if err != nil {
				return err
			}
			for _, p := range ps {
				fmt.Fprintf(streams.Out, "%s\t%s\n", p.Name, p.Modified.Local().Format(time.DateTime))
			}
			return nil
		},
	}
}

func newCmdDropProfile() *cobra.Command {
	return &cobra.Command{
		Use: "drop-profile NAME", Short: "Delete a profile", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return config.DropProfile(args[0]) },
	}
}

func printAll(w io.Writer, root *cobra.Command, c config.Config) {
	var keys []string
	defaults := map[string]string{}
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		keys = append(keys, "global."+f.Name)
		defaults["global."+f.Name] = f.DefValue
	})
	for _, cmd := range root.Commands() {
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			k := cmd.Name() + "." + f.Name
			keys = append(keys, k)
			defaults[k] = f.DefValue
		})
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := c.Get(k); ok {
			fmt.Fprintf(w, "%s\t%s\t(set)\n", k, v)
		} else {
			fmt.Fprintf(w, "%s\t%s\t(default)\n", k, defaults[k])
		}
	}
}

// ApplyDefaults sets every flag of cmd that the command line left alone from the config
// ("<command>.<flag>", then "global.<flag>").
func ApplyDefaults(cmd *cobra.Command) error {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Name() == "config" {
			return nil
		}
	}
	cfg, err := config.Load()
	if err != nil || len(cfg) == 0 {
		return err
	}
	var ferr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || ferr != nil {
			return
		}
		for _, k := range []string{cmd.Name() + "." + f.Name, "global." + f.Name} {
			if v, ok := cfg.Get(k); ok {
				if err := f.Value.Set(v); err != nil {
					ferr = usage.Errorf("%s in %s: %q is not valid for --%s: %v; fix it with 'kubectl kt config set'", k, config.Path(), v, f.Name, err)
				}
				return
			}
		}
	})
	return ferr
}
