//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

func TestVersionAgainstCluster(t *testing.T) {
	nothingLeftBehind(t)
	r := kt(t, "version")
	if r.Code != 0 {
		t.Fatalf("kubectl kt version failed:\n%s", r)
	}
	for _, want := range []string{"Client Version: v", "Shadow Image: ghcr.io/kubectl-kt/shadow:v", "Server Version: v1.34.4"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("version output lacks %q:\n%s", want, r)
		}
	}
	r = kt(t, "version", "-o", "json")
	var info struct {
		Version, ShadowImage, ServerVersion string
		ProtocolVersion                     int
	}
	if err := json.Unmarshal([]byte(r.Stdout), &info); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, r)
	}
	if info.ServerVersion != "v1.34.4" || info.ProtocolVersion < 1 || !strings.HasSuffix(info.ShadowImage, ":"+info.Version) {
		t.Errorf("unexpected version info %+v", info)
	}
}

func TestUsageErrors(t *testing.T) {
	nothingLeftBehind(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"version", "-o", "xml"}, "use json or yaml"},
		{[]string{"no-such-command"}, "unknown command"},
		{[]string{"version", "--no-such-flag"}, "unknown flag"},
	} {
		r := kt(t, c.args...)
		if r.Code != 2 {
			t.Errorf("kubectl kt %v: exit %d, want 2\n%s", c.args, r.Code, r)
		}
		lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("kubectl kt %v: want one error line containing %q, got:\n%s", c.args, c.want, r.Stderr)
		}
	}
}

// TestKubectlPlugin runs kubectl-kt through kubectl's plugin mechanism, and kubectl's
// completion through kubectl_complete-kt.
func TestKubectlPlugin(t *testing.T) {
	nothingLeftBehind(t)
	dir := t.TempDir()
	for _, f := range []string{ktBin, "../../plugins/kubectl_complete-kt"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o755)
	}
	path := "PATH=" + dir + ":" + os.Getenv("PATH")
	r := laptop(t, "env", path, "kubectl", "kt", "--kubeconfig", laptopKubecfg, "version")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Server Version: v1.34.4") {
		t.Errorf("kubectl kt version through kubectl:\n%s", r)
	}
	r = laptop(t, "env", path, "kubectl", "__complete", "kt", "ex")
	if !strings.Contains(r.Stdout, "exchange") {
		t.Errorf("kubectl __complete kt ex:\n%s", r)
	}
	r = laptop(t, "env", path, "kubectl", "__complete", "kt", "connect", "--dns")
	if !strings.Contains(r.Stdout, "--dns-mode") {
		t.Errorf("flag completion through kubectl:\n%s", r)
	}
	// kubectl's flags and the TARGET arguments complete from the kubeconfig and the cluster.
	complete := func(args ...string) []string {
		r := laptop(t, append([]string{"env", path, "KUBECONFIG=" + laptopKubecfg, "kubectl", "__complete", "kt"}, args...)...)
		if r.Code != 0 {
			t.Errorf("kubectl __complete kt %q:\n%s", args, r)
		}
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
			if !strings.HasPrefix(l, ":") {
				out = append(out, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return out
	}
	cfg, err := clientcmd.LoadFromFile(laptopKubecfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args      []string
		want, not []string // want nil: nothing offered
	}{
		{[]string{"-n", testNamespace, "exchange", ""}, []string{"web", "deploy/", "sts/", "svc/"}, []string{"pod/"}},
		{[]string{"-n", testNamespace, "run", "deploy/w"}, []string{"deploy/web"}, nil},
		{[]string{"-n", testNamespace, "mesh", "sts/"}, nil, nil},
		{[]string{"-n", "default", "recover", ""}, []string{"kubernetes"}, []string{"web"}},
		{[]string{"--namespace", "kt-"}, []string{testNamespace}, []string{"default"}},
		{[]string{"--context", ""}, []string{cfg.CurrentContext}, nil},
		{[]string{"--cluster", ""}, []string{cfg.Contexts[cfg.CurrentContext].Cluster}, nil},
		{[]string{"--user", ""}, []string{cfg.Contexts[cfg.CurrentContext].AuthInfo}, nil},
	} {
		got := complete(c.args...)
		if c.want == nil && len(got) != 0 {
			t.Errorf("kubectl kt %q<TAB> = %q, want nothing", c.args, got)
		}
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("kubectl kt %q<TAB> = %q, want %q among them", c.args, got, w)
			}
		}
		for _, n := range c.not {
			if slices.Contains(got, n) {
				t.Errorf("kubectl kt %q<TAB> = %q, should not offer %q", c.args, got, n)
			}
		}
	}
	pods := complete("-n", testNamespace, "env", "pod/web-")
	if len(pods) == 0 || !strings.HasPrefix(pods[0], "pod/web-") {
		t.Errorf("pod names: %q", pods)
	}
}
