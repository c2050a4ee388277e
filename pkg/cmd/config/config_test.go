package config

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestParseSet(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		key, value string
		err        string
	}{
		{[]string{"connect.dns-mode=hosts"}, "connect.dns-mode", "hosts", ""},
		{[]string{"global.image=r/kt:v1=x"}, "global.image", "r/kt:v1=x", ""},
		{[]string{"connect.dns-mode", "hosts"}, "connect.dns-mode", "hosts", ""},
		{[]string{"connect.dns-mode", "=", "hosts"}, "connect.dns-mode", "hosts", ""},
		{[]string{"connect.dns-mode"}, "", "", "write KEY=VALUE or KEY VALUE"},
		{[]string{"a", "b", "c"}, "", "", "KEY = VALUE"},
	} {
		k, v, err := parseSet(tc.args)
		if k != tc.key || v != tc.value || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("parseSet(%q) = %q, %q, %v", tc.args, k, v, err)
		}
	}
}

// tree is a root with a persistent --namespace and a connect command with --dns-mode and a
// duration, as the real tree has.
func tree() *cobra.Command {
	root := &cobra.Command{Use: "kt"}
	root.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	root.PersistentFlags().String("namespace", "", "")
	c := &cobra.Command{Use: "connect", RunE: func(*cobra.Command, []string) error { return nil }}
	c.Flags().String("dns-mode", "localDNS", "")
	c.Flags().Duration("timeout", time.Second, "")
	root.AddCommand(c)
	return root
}

func TestLookup(t *testing.T) {
	root := tree()
	for _, tc := range []struct {
		key, flag, err string
	}{
		{"connect.dns-mode", "dns-mode", ""},
		{"connect.dns_mode", "dns-mode", ""}, // the root's normalization applies
		{"connect.namespace", "namespace", ""},
		{"global.timeout", "timeout", ""},
		{"global.namespace", "namespace", ""},
		{"connect.nope", "", "kubectl kt connect has no flag --nope"},
		{"global.nope", "", "no command has a flag --nope"},
		{"exchange.mode", "", `no command "exchange"`},
		{"nodot", "", ""},
	} {
		f, err := lookup(root, tc.key)
		switch {
		case tc.flag != "" && (err != nil || f.Name != tc.flag):
			t.Errorf("lookup(%q): %v, %v; want --%s", tc.key, f, err, tc.flag)
		case tc.flag == "" && err == nil:
			t.Errorf("lookup(%q): %v, want an error", tc.key, f.Name)
		case tc.err != "" && !strings.Contains(err.Error(), tc.err):
			t.Errorf("lookup(%q): %v, want %q", tc.key, err, tc.err)
		}
	}
}

// TestSetGetUnset drives the subcommands against a config in a temporary KT_HOME.
func TestSetGetUnset(t *testing.T) {
	t.Setenv("KT_HOME", t.TempDir())
	root := tree()
	var out, errOut bytes.Buffer
	root.AddCommand(NewCmdConfig(root, genericiooptions.IOStreams{Out: &out, ErrOut: &errOut}))
	run := func(args ...string) error {
		out.Reset()
		errOut.Reset()
		root.SetArgs(args)
		return root.Execute()
	}
	if err := run("config", "set", "connect.dns_mode=hosts"); err != nil {
		t.Fatal(err)
	}
	if err := run("config", "get", "connect.dns-mode"); err != nil || out.String() != "connect.dns-mode = hosts\n" {
		t.Errorf("get after set: %q, %v (the key is stored under the flag's own spelling)", out.String(), err)
	}
	if err := run("config", "set", "connect.timeout", "soon"); err == nil || !strings.Contains(err.Error(), "not a valid value for --timeout") {
		t.Errorf("an invalid value: %v", err)
	}
	if err := run("config", "get", "connect.timeout"); err != nil || out.String() != "connect.timeout = (not set)\n" {
		t.Errorf("an invalid value was stored: %q, %v", out.String(), err)
	}
	if err := run("config", "unset"); err == nil || !strings.Contains(err.Error(), "--all") {
		t.Errorf("unset with nothing: %v", err)
	}
	if err := run("config", "unset", "connect.dns-mode"); err != nil {
		t.Fatal(err)
	}
	if err := run("config", "show"); err != nil || out.String() != "" {
		t.Errorf("show after unset: %q, %v", out.String(), err)
	}
}

// TestValidate checks each subcommand's arguments as the command line gives them; an error
// means nothing was written.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		action string
		args   []string
		all    bool
		err    string // "" for valid
	}{
		{"show", nil, false, ""},
		{"get", []string{"connect.dns-mode", "global.namespace"}, false, ""},
		{"get", []string{"connect.dns-mode", "connect.nope"}, false, "kubectl kt connect has no flag --nope"},
		{"set", []string{"connect.timeout=3s"}, false, ""},
		{"set", []string{"connect.timeout", "soon"}, false, "not a valid value for --timeout"},
		{"set", []string{"nodot=1"}, false, "keys are GROUP.ITEM"},
		{"set", []string{"connect.timeout"}, false, "write KEY=VALUE"},
		{"unset", []string{"connect.dns-mode"}, false, ""},
		{"unset", nil, true, ""},
		{"unset", nil, false, "--all"},
		{"unset", []string{"connect.dns-mode"}, true, "not both"},
		{"unset", []string{"nodot"}, false, "keys are GROUP.ITEM"},
		{"save-profile", []string{"team-a"}, false, ""},
		{"load-profile", []string{"../config"}, false, "profile name"},
		{"drop-profile", []string{".hidden"}, false, "profile name"},
		{"list-profile", nil, false, ""},
	} {
		o := NewOptions(tree(), tc.action, genericiooptions.IOStreams{})
		o.All = tc.all
		err := o.Complete(tc.args)
		if err == nil {
			err = o.Validate()
		}
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("config %s %q (all %v): %v, want %q", tc.action, tc.args, tc.all, err, tc.err)
		}
	}
}
