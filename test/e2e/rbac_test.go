//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

const rbacNS = "kt-e2e-rbac"

// TestLeastPrivilege runs every command as a user bound only to docs/rbac.yaml's Role, in a
// namespace that enforces Pod Security "restricted".
func TestLeastPrivilege(t *testing.T) {
	rbac, err := os.ReadFile("../../docs/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	setup := fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels: {pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/enforce-version: latest}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: [serve, -http, ":8080", -udp, "", -name, app-in-cluster]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: %[1]s}
spec:
  selector: {app: app}
  ports: [{port: 80, targetPort: http}]
`, rbacNS, testapp)
	if r := runCmdStdin(t, setup, "kubectl", "--kubeconfig", hostKubeconfig, "apply", "-f", "-"); r.Code != 0 {
		t.Fatalf("setup: %s", r)
	}
	if r := runCmdStdin(t, string(rbac), "kubectl", "--kubeconfig", hostKubeconfig, "-n", rbacNS, "apply", "-f", "-"); r.Code != 0 {
		t.Fatalf("apply docs/rbac.yaml: %s", r)
	}
	kubectl(t, "-n", rbacNS, "rollout", "status", "deploy/app", "--timeout=90s")
	// A ready pod is not yet a Service that answers: the controller manager writes its
	// EndpointSlice, and after an API server restart (TestExchangeSurvivesControlPlaneRestarts)
	// its informer can lag seconds behind ("EndpointSlice informer cache is out of date"),
	// with connections to the ClusterIP refused meanwhile. The fixture is ready when a pod's
	// request answers, before any kt runs.
	began := time.Now()
	eventuallyFromPod(t, "http://app."+rbacNS+"/", "app-in-cluster")
	t.Logf("the app Service answered a pod %s after its rollout", time.Since(began).Round(time.Millisecond))
	nothingLeftBehind(t)
	as := []string{"-n", rbacNS, "--as", "developer"}
	// a user without the Role is told what is missing
	if r := kt(t, "-n", rbacNS, "--as", "stranger", "connect", "--disable-tun", "--proxy-port", "12240"); r.Code != 1 || !strings.Contains(r.Stderr, "forbidden") || !strings.Contains(r.Stderr, "docs/rbac.yaml") {
		t.Errorf("connect without permissions:\n%s", r)
	}
	t.Run("connect", func(t *testing.T) {
		p := startKt(t, append(as, "connect", "--shadow-expire-after", "15s")...)
		p.WaitFor("Connected", 60*time.Second)
		if r := laptop(t, "curl", "-sS", "-m", "10", "http://app."+rbacNS+"/"); !strings.Contains(r.Stdout, "app-in-cluster") {
			t.Errorf("curl through connect as the developer:\n%s\n%s", r, p.Output())
		}
		stopClean(t, p)
	})
	t.Run("connect --share-shadow", func(t *testing.T) {
		p := startKt(t, append(as, "connect", "--share-shadow", "--disable-tun", "--proxy-port", "12241", "--shadow-expire-after", "15s")...)
		p.WaitFor("export ALL_PROXY=socks5h://127.0.0.1:12241", 60*time.Second)
		if r := laptop(t, "curl", "-sS", "-m", "10", "--socks5-hostname", "127.0.0.1:12241", "http://app."+rbacNS+"/"); !strings.Contains(r.Stdout, "app-in-cluster") {
			t.Errorf("curl through a shared shadow as the developer:\n%s\n%s", r, p.Output())
		}
		stopClean(t, p)
	})
	laptopServer(t, "laptop-dev", "127.0.0.1:8080")
	t.Run("exchange", func(t *testing.T) {
		p := startKt(t, append(as, "exchange", "app", "--expose", "8080:80")...)
		p.WaitFor("Exchanged service", 60*time.Second)
		if strings.Contains(p.Output(), "cannot restore the Service by itself") {
			t.Errorf("the Role should allow self-restore:\n%s", p.Output())
		}
		// The endpoints are the shadow's; kube-proxy follows within its minSyncPeriod (1 s).
		eventually(t, 5*time.Second, "the exchanged Service answers from the laptop", func() error {
			if r := inCluster(t, "timeout 10 wget -qO- http://app."+rbacNS+"/"); !strings.Contains(r.Stdout, "laptop-dev") {
				return fmt.Errorf("exchanged request:\n%s", r)
			}
			return nil
		})
		stopExchange(t, p)
	})
	t.Run("mesh", func(t *testing.T) {
		p := startKt(t, append(as, "mesh", "app", "--expose", "8080:80", "--version-mark", "version:rbac")...)
		p.WaitFor("Meshed service", 90*time.Second)
		if r := inCluster(t, "timeout 10 wget -qO- --header 'version: rbac' http://app."+rbacNS+"/"); !strings.Contains(r.Stdout, "laptop-dev") {
			t.Errorf("meshed request:\n%s", r)
		}
		if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
			t.Errorf("mesh exit %d:\n%s", code, p.Output())
		}
	})
	// mirror's copies come through the pod proxy, which the Role allows; a Role without
	// pods/proxy still mirrors, through the port-forward, and says so.
	noProxy := strings.Replace(strings.Replace(strings.Replace(string(rbac),
		"  resources: [pods/proxy]\n  verbs: [get]\n", "  resources: [pods]\n  verbs: [get]\n", 1),
		"name: kubectl-kt\n", "name: kubectl-kt-no-proxy\n", -1), "name: developer ", "name: developer-no-proxy ", 1)
	if !strings.Contains(noProxy, "developer-no-proxy") || strings.Contains(noProxy, "pods/proxy]") {
		t.Fatalf("docs/rbac.yaml changed: no Role without pods/proxy made from it")
	}
	if r := runCmdStdin(t, noProxy, "kubectl", "--kubeconfig", hostKubeconfig, "-n", rbacNS, "apply", "-f", "-"); r.Code != 0 {
		t.Fatalf("apply the Role without pods/proxy: %s", r)
	}
	for user, says := range map[string]string{
		"developer":          "Connections come through the API server's pod proxy",
		"developer-no-proxy": "note: forwarded connections take the port-forward",
	} {
		t.Run("mirror as "+user, func(t *testing.T) {
			rec := recorder(t, "127.0.0.1:8090")
			p := startKt(t, "-n", rbacNS, "--as", user, "mirror", "app", "--expose", "8090:80", "--path-prefix", "/m/")
			p.WaitFor("Mirroring service", 90*time.Second)
			if r := inCluster(t, "timeout 10 wget -qO- http://app."+rbacNS+"/m/"+user); !strings.Contains(r.Stdout, "app-in-cluster") {
				t.Errorf("mirrored request, want the original pod's answer:\n%s", r)
			}
			eventually(t, 10*time.Second, "the copy on the laptop", func() error {
				if n := len(recordedBy(rec, "/m/"+user)); n != 1 {
					return fmt.Errorf("%d copies", n)
				}
				return nil
			})
			if !strings.Contains(p.Output(), says) {
				t.Errorf("mirror as %s should say %q:\n%s", user, says, p.Output())
			}
			if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
				t.Errorf("mirror exit %d:\n%s", code, p.Output())
			}
			rec.Stop(syscall.SIGTERM, 10*time.Second)
		})
	}
	t.Run("preview", func(t *testing.T) {
		p := startKt(t, append(as, "preview", "app-dev", "--expose", "8080:80")...)
		p.WaitFor("Previewing", 60*time.Second)
		eventuallyFromPod(t, "http://app-dev."+rbacNS+"/", "laptop-dev")
		p.Stop(syscall.SIGINT, 30*time.Second)
	})
	t.Run("forward", func(t *testing.T) {
		p := startKt(t, append(as, "forward", "svc/app", "18280:80")...)
		p.WaitFor("Forwarding", 30*time.Second)
		if r := laptop(t, "curl", "-sS", "-m", "10", "http://127.0.0.1:18280/"); !strings.Contains(r.Stdout, "app-in-cluster") {
			t.Errorf("forward as the developer:\n%s", r)
		}
		p.Stop(syscall.SIGINT, 20*time.Second)
	})
	t.Run("doctor", func(t *testing.T) {
		r := kt(t, append(as, "doctor")...)
		if r.Code != 0 || strings.Contains(r.Stdout, "FAIL") {
			t.Errorf("doctor as the developer with the Role:\n%s", r)
		}
	})
}

func runCmdStdin(t testing.TB, stdin string, name string, args ...string) result {
	t.Helper()
	return runCmd(t, time.Minute, "bash", "-c", fmt.Sprintf("cat <<'KTEOF' | %s %s\n%s\nKTEOF", name, strings.Join(args, " "), stdin))
}
