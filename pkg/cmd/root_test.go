package cmd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

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

// kt-connect's -i and -f are not kt's: kubectl users read them as --stdin and --filename.
func TestOldShorthandsSayTheLongFlag(t *testing.T) {
	for short, long := range map[string]string{"-i": "--image", "-f": "--force-update"} {
		root := NewKtCommand(genericiooptions.NewTestIOStreamsDiscard())
		root.SetArgs([]string{"connect", short, "x"})
		c, err := root.ExecuteC()
		var b bytes.Buffer
		if code := ExitCode(err, &b, c.CommandPath()); code != ExitUsage || !strings.Contains(b.String(), "write "+long) {
			t.Errorf("%s: exit %d, printed %q", short, code, b.String())
		}
	}
}

// API-server warnings go to stderr as kubectl prints them, once each.
func TestWarningsReadAsKubectls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Warning", `299 - "v1 ComponentStatus is deprecated"`)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
	}))
	defer srv.Close()
	var errOut bytes.Buffer
	root := NewKtCommand(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &bytes.Buffer{}, ErrOut: &errOut})
	root.SetArgs([]string{"version", "--client"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	defer rest.SetDefaultWarningHandler(rest.WarningLogger{})
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/componentstatuses").Do(context.Background())
	}
	if got := errOut.String(); got != "Warning: v1 ComponentStatus is deprecated\n" {
		t.Errorf("stderr %q, want one kubectl-style warning", got)
	}
}
