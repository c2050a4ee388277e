//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// killFor SIGKILLs the test cluster's component (kube-apiserver, kubelet), keeps it down for
// d, and starts it again with the same command line, as hack/cluster/up.sh started it (its
// pid file updated, so that down.sh and up.sh still know it).
func killFor(t *testing.T, component string, d time.Duration) {
	t.Helper()
	pidFile := filepath.Join(ktRoot, "run", component+".pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("%s: %v", component, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("%s pid %d: %v", component, pid, err)
	}
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s (pid %d) killed; down for %s", component, pid, d)
	time.Sleep(d)
	log, err := os.OpenFile(filepath.Join(ktRoot, "logs", component+".log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = cwd, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart %s: %v", component, err)
	}
	os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	cmd.Process.Release()
	eventually(t, 90*time.Second, component+" answers again", func() error {
		if component == "kubelet" {
			out, err := exec.Command("curl", "-sk", "-m", "2", "http://127.0.0.1:10248/healthz").CombinedOutput()
			if err != nil || !bytes.Equal(bytes.TrimSpace(out), []byte("ok")) {
				return fmt.Errorf("kubelet healthz: %s %v", out, err)
			}
			return nil
		}
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err
	})
}

// shadowsOf lists the shadow pods of a role in the test namespace.
func shadowsOf(t testing.TB, role string) []string {
	t.Helper()
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + role})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}

// TestExchangeSurvivesControlPlaneRestarts: the API server, then the kubelet, is SIGKILLed for
// 15 s under a connect, an exchange (of web) and a mesh (of multi). Each keeps its shadow (no
// new pod; the mesh its router), the exchange its lock and the Service's switch, the mesh its
// route; each says so once; in-cluster requests reach the laptop again (marked ones for the
// mesh, the others the cluster's pods), and the laptop reaches the cluster again, within 10 s
// of the component answering. Ctrl-C then restores everything.
func TestExchangeSurvivesControlPlaneRestarts(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-outage", "127.0.0.1:18090")
	p := startKt(t, "-n", testNamespace, "exchange", "web", "--expose", "18090:80", "--shadow-expire-after", "90s")
	p.WaitFor("Exchanged service", 60*time.Second)
	eventuallyFromPod(t, "http://web."+testNamespace+"/", "laptop-outage")
	shadows := shadowsOf(t, wire.RoleExchange)
	if len(shadows) != 1 {
		t.Fatalf("exchange shadows %v, want one", shadows)
	}
	c := startConnect(t, "--shadow-expire-after", "90s")
	connectShadows := shadowsOf(t, wire.RoleConnect)
	laptopServer(t, "laptop-mesh", "127.0.0.1:18091")
	m := startKt(t, "-n", testNamespace, "mesh", "multi", "--expose", "18091:80", "--version-mark", "version:outage", "--shadow-expire-after", "90s")
	m.WaitFor("Meshed service", 90*time.Second)
	// A mirror of the same Service, through the same router: its copies come through the pod
	// proxy, which the API server's restart cuts and the kubelet's does not.
	rec := recorder(t, "127.0.0.1:18092")
	mr := startKt(t, "-n", testNamespace, "mirror", "multi", "--expose", "18092:80", "--path-prefix", "/mirror/", "--shadow-expire-after", "90s")
	mr.WaitFor("Mirroring service", 90*time.Second)
	meshPods := append(shadowsOf(t, wire.RoleMesh), shadowsOf(t, wire.RoleRouter)...)
	marked := "http://multi." + testNamespace + "/"
	for _, component := range []string{"kube-apiserver", "kubelet"} {
		before, cbefore, mbefore := p.Output(), c.Output(), m.Output()
		killFor(t, component, 15*time.Second)
		t0 := time.Now()
		eventually(t, 10*time.Second, "an in-cluster request reaches the laptop after the "+component+" restart", func() error {
			if r := inCluster(t, "timeout 3 wget -qO- http://web."+testNamespace+"/"); !strings.Contains(r.Stdout, "laptop-outage") {
				return fmt.Errorf("got %q %s", r.Stdout, r.Stderr)
			}
			return nil
		})
		t.Logf("%s: requests reach the laptop %s after it answered", component, time.Since(t0).Round(10*time.Millisecond))
		eventually(t, 10*time.Second, "the laptop reaches the cluster through connect after the "+component+" restart", func() error {
			if r := laptop(t, "curl", "-sS", "-m", "2", "http://web."+testNamespace+"/"); r.Code != 0 {
				return fmt.Errorf("%s", r.Stderr)
			}
			return nil
		})
		t.Logf("%s: the laptop reaches the cluster %s after it answered", component, time.Since(t0).Round(10*time.Millisecond))
		eventually(t, 10*time.Second, "a marked request reaches the laptop through the mesh after the "+component+" restart", func() error {
			if got := withHeader(t, "version: outage", marked); !strings.Contains(got, "laptop-mesh") {
				return fmt.Errorf("got %q", got)
			}
			return nil
		})
		if got := withHeader(t, "", marked); !strings.Contains(got, "echo from multi-") {
			t.Errorf("%s restart: an unmarked request got %q, want the cluster's pods", component, got)
		}
		t.Logf("%s: marked requests reach the laptop %s after it answered", component, time.Since(t0).Round(10*time.Millisecond))
		eventually(t, 20*time.Second, "a copy reaches the laptop through the mirror after the "+component+" restart", func() error {
			withHeader(t, "", marked+"mirror/"+component)
			if n := len(recordedBy(rec, "/mirror/"+component)); n == 0 {
				return fmt.Errorf("no copy of /mirror/%s yet", component)
			}
			return nil
		})
		t.Logf("%s: copies reach the laptop %s after it answered", component, time.Since(t0).Round(10*time.Millisecond))
		mduring := strings.TrimPrefix(m.Output(), mbefore)
		if got := append(shadowsOf(t, wire.RoleMesh), shadowsOf(t, wire.RoleRouter)...); strings.Join(got, " ") != strings.Join(meshPods, " ") {
			t.Errorf("%s restart: mesh pods %v, want the same %v\n%s", component, got, meshPods, mduring)
		}
		for _, line := range []string{"API server unreachable", "Tunnel to the shadow dropped", "cannot refresh", "Lost the shadow"} {
			if n := strings.Count(mduring, line); n > 1 || (line == "Lost the shadow" && n > 0) {
				t.Errorf("%s restart: the mesh said %q %d times:\n%s", component, line, n, mduring)
			}
		}
		if got := shadowsOf(t, wire.RoleConnect); strings.Join(got, " ") != strings.Join(connectShadows, " ") {
			t.Errorf("%s restart: connect shadows %v, want the same %v\n%s", component, got, connectShadows, strings.TrimPrefix(c.Output(), cbefore))
		}
		during := strings.TrimPrefix(p.Output(), before)
		if strings.Contains(during, "starting a new one") || strings.Contains(during, "Lost the shadow") {
			t.Errorf("%s restart: the exchange gave up its shadow:\n%s", component, during)
		}
		for _, line := range []string{"API server unreachable", "Tunnel to the shadow dropped", "cannot refresh"} {
			if n := strings.Count(during, line); n > 1 {
				t.Errorf("%s restart: %q said %d times, want at most once:\n%s", component, line, n, during)
			}
		}
		if got := shadowsOf(t, wire.RoleExchange); len(got) != 1 || got[0] != shadows[0] {
			t.Errorf("%s restart: shadows %v, want the same %v", component, got, shadows)
		}
		svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
		if l, ok := wire.ServiceLock(svc); err != nil || !ok || l.Role != wire.RoleExchange {
			t.Errorf("%s restart: the Service is no longer exchanged (%v, %v)", component, l, err)
		}
		t.Logf("%s restart, the exchange said:\n%s\nconnect said:\n%s\nmesh said:\n%s", component, during, strings.TrimPrefix(c.Output(), cbefore), mduring)
	}
	if out := mr.Output(); strings.Contains(out, "take the port-forward") || strings.Count(out, "Connections come through the API server's pod proxy") != 1 {
		t.Errorf("the mirror should have kept to the pod proxy through the restarts, and said so once:\n%s", out)
	}
	if code := mr.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mirror exit %d:\n%s", code, mr.Output())
	}
	if code := m.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mesh exit %d:\n%s", code, m.Output())
	}
	stopClean(t, c)
	stopExchange(t, p)
	settled(t)
}

// settled waits until the cluster's controllers and kube-proxy follow a Service change again:
// after an API server restart their watches back off for up to half a minute (client-go's
// reflector backoff grows while the server is down), and a test that starts in that window
// sees a Service switched in the API but not on the node.
func settled(t *testing.T) {
	t.Helper()
	t0 := time.Now()
	eventually(t, 90*time.Second, "web's restored selector reaches kube-proxy", func() error {
		if r := inCluster(t, "timeout 3 wget -qO- http://web."+testNamespace+"/"); !strings.Contains(r.Stdout, "echo from web-") {
			return fmt.Errorf("got %q %s", r.Stdout, r.Stderr)
		}
		return nil
	})
	t.Logf("the cluster follows Service changes again %s after the exchange ended", time.Since(t0).Round(10*time.Millisecond))
}
