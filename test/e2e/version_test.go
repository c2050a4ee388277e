//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
}
