package cmd

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/cmd/usage"
)

func TestNormalizeFlagName(t *testing.T) {
	for in, want := range map[string]string{
		"dns-mode":            "dns-mode",
		"dnsMode":             "dns-mode",
		"versionMark":         "version-mark",
		"imagePullSecret":     "image-pull-secret",
		"podCreationTimeout":  "pod-creation-timeout",
		"disableTunDevice":    "disable-tun",
		"kubeconfig":          "kubeconfig",
		"useShadowDeployment": "use-shadow-deployment",
	} {
		if got := string(NormalizeFlagName(nil, in)); got != want {
			t.Errorf("NormalizeFlagName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{usage.Errorf("bad --expose"), 2},
		{errors.New("unknown flag: --x"), 2},
	} {
		var b bytes.Buffer
		if got := ExitCode(c.err, &b, ""); got != c.code {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.code)
		}
		if c.err != nil && strings.Count(b.String(), "\n") != 1 {
			t.Errorf("ExitCode(%v) printed %q, want one line", c.err, b.String())
		}
	}
}

// A usage error points at the help of the command that failed.
func TestUsageErrorNamesTheCommandsHelp(t *testing.T) {
	var out bytes.Buffer
	root := NewKtCommand(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out})
	root.SetArgs([]string{"exchange", "web", "--expose", "abc"})
	c, err := root.ExecuteC()
	var b bytes.Buffer
	if code := ExitCode(err, &b, c.CommandPath()); code != ExitUsage || !strings.Contains(b.String(), "see 'kubectl kt exchange --help'") {
		t.Fatalf("exit %d, printed %q", code, b.String())
	}
}

func TestRootHelpReadsKubectlKt(t *testing.T) {
	var out bytes.Buffer
	root := NewKtCommand(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out})
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kubectl kt [command]") {
		t.Errorf("help does not read `kubectl kt`:\n%s", out.String())
	}
}

func TestCamelCaseAliasesParse(t *testing.T) {
	root := NewKtCommand(genericiooptions.NewTestIOStreamsDiscard())
	root.SetArgs([]string{"version", "--client", "--requestTimeout", "5s"})
	if err := root.Execute(); err != nil {
		t.Fatalf("kt-connect style --requestTimeout rejected: %v", err)
	}
}
