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

// Options holds the arguments and flags of one config subcommand (Action): the keys of get
// and unset, the key and value of set, the profile name of the profile subcommands.
type Options struct {
	Action     string
	Keys       []string
	Key, Value string
	Profile    string
	All        bool // show: every key; unset: every default
	Force      bool // save-profile: overwrite

	root *cobra.Command
	flag *pflag.Flag // set: the flag Key names

	genericiooptions.IOStreams
}

// NewOptions returns the Options of the subcommand action of config, whose keys name root's flags.
func NewOptions(root *cobra.Command, action string, streams genericiooptions.IOStreams) *Options {
	return &Options{Action: action, root: root, IOStreams: streams}
}

// Complete reads the subcommand's arguments.
func (o *Options) Complete(args []string) error {
	switch o.Action {
	case "get", "unset":
		o.Keys = args
	case "set":
		k, v, err := parseSet(args)
		if err != nil {
			return err
		}
		o.Key, o.Value = k, v
	case "save-profile", "load-profile", "drop-profile":
		o.Profile = args[0]
	}
	return nil
}

// Validate checks every key against the command tree and every value against its flag, and
// writes nothing: a bad argument leaves the config as it was.
func (o *Options) Validate() error {
	switch o.Action {
	case "get":
		for _, k := range o.Keys {
			if _, err := lookup(o.root, k); err != nil {
				return err
			}
		}
	case "set":
		f, err := lookup(o.root, o.Key)
		if err != nil {
			return err
		}
		// Parsing into the flag of this process's tree, which config does not run, checks the
		// value as the command that reads it would.
		if err := f.Value.Set(o.Value); err != nil {
			return fmt.Errorf("%s = %q: not a valid value for --%s: %v", o.Key, o.Value, f.Name, err)
		}
		o.flag = f
	case "unset":
		if o.All == (len(o.Keys) > 0) {
			return fmt.Errorf("name the keys to unset, or pass --all (not both)")
		}
		for _, k := range o.Keys {
			if _, _, err := config.Split(k); err != nil {
				return err
			}
		}
	case "save-profile", "load-profile", "drop-profile":
		return config.CheckProfileName(o.Profile)
	}
	return nil
}

// Run carries out the subcommand.
func (o *Options) Run() error {
	switch o.Action {
	case "show":
		return o.show()
	case "get":
		return o.get()
	case "set":
		return o.set()
	case "unset":
		return o.unset()
	case "save-profile":
		if err := config.SaveProfile(o.Profile, o.Force); err != nil {
			return err
		}
		fmt.Fprintf(o.ErrOut, "saved profile %s\n", o.Profile)
		return nil
	case "load-profile":
		return config.LoadProfile(o.Profile)
	case "list-profile":
		return o.listProfiles()
	case "drop-profile":
		return config.DropProfile(o.Profile)
	}
	return fmt.Errorf("config %s: no such subcommand", o.Action)
}

func (o *Options) show() error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	if o.All {
		printAll(w, o.root, c)
		return nil
	}
	for _, k := range c.Keys() {
		v, _ := c.Get(k)
		fmt.Fprintf(w, "%s\t%s\n", k, v)
	}
	return nil
}

func (o *Options) get() error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	for _, k := range o.Keys {
		v, ok := c.Get(k)
		if !ok {
			v = "(not set)"
		}
		fmt.Fprintf(o.Out, "%s = %s\n", k, v)
	}
	return nil
}

func (o *Options) set() error {
	g, _, _ := config.Split(o.Key)
	k := g + "." + o.flag.Name // the flag's own spelling, whatever alias was typed
	c, err := config.Load()
	if err != nil {
		return err
	}
	if err := c.Set(k, o.Value); err != nil {
		return err
	}
	if err := c.Save(); err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "%s = %s\n", k, o.Value)
	return nil
}

func (o *Options) unset() error {
	if o.All {
		return config.Config{}.Save()
	}
	c, err := config.Load()
	if err != nil {
		return err
	}
	for _, k := range o.Keys {
		if err := c.Unset(k); err != nil {
			return err
		}
	}
	return c.Save()
}

func (o *Options) listProfiles() error {
	ps, err := config.ListProfiles()
	if err != nil {
		return err
	}
	for _, p := range ps {
		fmt.Fprintf(o.Out, "%s\t%s\n", p.Name, p.Modified.Local().Format(time.DateTime))
	}
	return nil
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
	sub := func(use, short string, args cobra.PositionalArgs, flags func(*pflag.FlagSet, *Options)) *cobra.Command {
		name, _, _ := strings.Cut(use, " ")
		o := NewOptions(root, name, streams)
		c := &cobra.Command{
			Use: use, Short: short, Args: args,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := o.Complete(args); err != nil {
					return usage.Wrap(err)
				}
				if err := o.Validate(); err != nil {
					return usage.Wrap(err)
				}
				return o.Run()
			},
		}
		if flags != nil {
			flags(c.Flags(), o)
		}
		cmd.AddCommand(c)
		return c
	}
	sub("show", "Print the configured defaults (--all: every key that can be set)", cobra.NoArgs, func(fs *pflag.FlagSet, o *Options) {
		fs.BoolVarP(&o.All, "all", "a", false, "List every key, with its value or default.")
	})
	sub("get KEY...", "Print configured values", cobra.MinimumNArgs(1), nil)
	sub("set KEY VALUE | KEY=VALUE", "Set a default", cobra.RangeArgs(1, 3), nil)
	sub("unset KEY... | --all", "Remove defaults", cobra.ArbitraryArgs, func(fs *pflag.FlagSet, o *Options) {
		fs.BoolVarP(&o.All, "all", "a", false, "Remove every default.")
	})
	sub("save-profile NAME", "Save the current defaults as a profile", cobra.ExactArgs(1), func(fs *pflag.FlagSet, o *Options) {
		fs.BoolVar(&o.Force, "force", false, "Overwrite an existing profile.")
	})
	sub("load-profile NAME", "Replace the current defaults with a profile", cobra.ExactArgs(1), nil)
	sub("list-profile", "List the profiles", cobra.NoArgs, nil)
	sub("drop-profile NAME", "Delete a profile", cobra.ExactArgs(1), nil)
	return cmd
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
