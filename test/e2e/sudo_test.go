//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

const nobody = "65534"

// userHome is a home for the unprivileged user "nobody", holding a copy of the laptop's kubeconfig.
func userHome(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kt-user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	kc, _ := os.ReadFile(laptopKubecfg)
	os.WriteFile(dir+"/kubeconfig", kc, 0o644)
	return dir
}

// asUser is the command line that runs kubectl-kt as nobody in the laptop netns.
func asUser(home string, args ...string) []string {
	return append([]string{"netns", "exec", laptopNetns, "setpriv", "--reuid=" + nobody, "--regid=" + nobody, "--clear-groups",
		"env", "-i", "HOME=" + home, "XDG_RUNTIME_DIR=" + home, "PATH=/usr/local/bin:/usr/bin:/bin",
		ktBin, "--kubeconfig", home + "/kubeconfig"}, args...)
}

func uidOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "gone"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	return "?"
}

// helperPIDs are the running kubectl-kt privileged helpers.
func helperPIDs() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(b), ktBin+"\x00__netadmin\x00") {
			continue
		}
		var pid int
		fmt.Sscanf(p, "/proc/%d/cmdline", &pid)
		pids = append(pids, pid)
	}
	return pids
}

func resolvEdited() bool {
	b, _ := os.ReadFile(laptopEtcNetns + "/resolv.conf")
	return strings.Contains(string(b), "kubectl kt connect")
}

// TestConnectAsNormalUserThroughSudo: a user whom sudoers allows only kubectl-kt's helper
// connects with a TUN device and cluster DNS; the kubeconfig is read and the cluster reached
// by the user's own process, and the machine is restored on exit, after SIGKILL of the user's
// process (by the helper alone), and after SIGKILL of both (by clean --local-only, as the user).
func TestConnectAsNormalUserThroughSudo(t *testing.T) {
	nothingLeftBehind(t)
	home := userHome(t)
	rule := fmt.Sprintf("#%s ALL=(root) NOPASSWD: %s __netadmin *\n", nobody, ktBin)
	const sudoers = "/etc/sudoers.d/kubectl-kt-e2e"
	if err := os.WriteFile(sudoers, []byte(rule), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(sudoers) })
	if len(helperPIDs()) > 0 {
		t.Fatalf("helpers already running: %v", helperPIDs())
	}
	start := func() (*proc, int) {
		t.Helper()
		p := startProc(t, "ip", asUser(home, "-n", testNamespace, "connect", "--shadow-expire-after", "15s")...)
		p.WaitFor("Connected to", 60*time.Second)
		if !strings.Contains(p.Output(), "Connected to") {
			t.Fatalf("connect as a normal user:\n%s", p.Output())
		}
		hs := helperPIDs()
		if len(hs) != 1 {
			t.Fatalf("want one privileged helper, found %v", hs)
		}
		return p, hs[0]
	}

	p, helper := start()
	if !strings.Contains(p.Output(), "as root through sudo") {
		t.Errorf("connect did not say what it runs through sudo:\n%s", p.Output())
	}
	if u := uidOf(t, p.cmd.Process.Pid); u != nobody {
		t.Errorf("connect runs as uid %s, want the user's %s", u, nobody)
	}
	if u := uidOf(t, helper); u != "0" {
		t.Errorf("the helper runs as uid %s, want 0", u)
	}
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/as-user"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("curl by name while connected as a normal user:\n%s", r)
	}
	stopClean(t, p)
	eventually(t, 10*time.Second, "the helper exits with connect", func() error {
		if hs := helperPIDs(); len(hs) > 0 {
			return fmt.Errorf("helpers still running: %v", hs)
		}
		return nil
	})

	t.Run("SIGKILL of the user's process: the helper restores the machine", func(t *testing.T) {
		p, _ := start()
		p.Kill()
		eventually(t, 10*time.Second, "resolv.conf restored, the TUN device gone and the helper exited", func() error {
			if resolvEdited() {
				return fmt.Errorf("resolv.conf still edited")
			}
			if r := laptop(t, "ip", "-o", "link", "show", "type", "tun"); strings.TrimSpace(r.Stdout) != "" {
				return fmt.Errorf("TUN device remains: %s", r.Stdout)
			}
			if hs := helperPIDs(); len(hs) > 0 {
				return fmt.Errorf("helpers still running: %v", hs)
			}
			return nil
		})
	})

	t.Run("SIGKILL of both: clean --local-only as the user, through sudo", func(t *testing.T) {
		p, helper := start()
		syscall.Kill(helper, syscall.SIGKILL)
		p.Kill()
		if !resolvEdited() {
			t.Fatal("expected resolv.conf to stay edited when both processes were killed")
		}
		r := runCmd(t, time.Minute, "ip", asUser(home, "clean", "--local-only")...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned local leftovers of connect pid") {
			t.Errorf("clean --local-only as the user:\n%s", r)
		}
		if resolvEdited() {
			t.Errorf("clean --local-only left resolv.conf edited")
		}
		if hs := helperPIDs(); len(hs) > 0 {
			t.Errorf("helpers still running after clean: %v", hs)
		}
	})

	eventually(t, 60*time.Second, "the killed runs' shadows expire and clean removes them", func() error {
		if r := kt(t, "-n", testNamespace, "clean", "--threshold", "1h"); r.Code != 0 {
			return fmt.Errorf("%s", r)
		}
		pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("%d kt pods remain (%v)", len(pods.Items), err)
		}
		return nil
	})
}
