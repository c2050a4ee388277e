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

// runappYAML is kubectl kt run's own workload: two containers (the annotation names the
// second as the default), an env var from a Secret, a ConfigMap directory, a Secret file by
// subPath and an emptyDir that cannot be copied; and a Service for the traffic variants.
const runappYAML = `
apiVersion: v1
kind: ConfigMap
metadata: {name: runapp-config, namespace: kt-e2e}
data: {app.yaml: "version: 1\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: runapp-secret, namespace: kt-e2e}
stringData: {token: s3cret-run}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: runapp, namespace: kt-e2e}
spec:
  selector: {matchLabels: {app: runapp}}
  template:
    metadata: {labels: {app: runapp}, annotations: {kubectl.kubernetes.io/default-container: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sidecar
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [sleep]
      - name: app
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [serve, -http, ":8080", -udp, ""]
        ports: [{name: http, containerPort: 8080}]
        env: [{name: RUN_TOKEN, valueFrom: {secretKeyRef: {name: runapp-secret, key: token}}}]
        volumeMounts:
        - {name: config, mountPath: /etc/runapp}
        - {name: secret, mountPath: /etc/creds/token, subPath: token}
        - {name: scratch, mountPath: /scratch}
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
      volumes:
      - {name: config, configMap: {name: runapp-config}}
      - {name: secret, secret: {secretName: runapp-secret}}
      - {name: scratch, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: runapp, namespace: kt-e2e}
spec:
  selector: {app: runapp}
  ports: [{name: http, port: 80, targetPort: http}]
`

// setupRunapp applies runappYAML and deletes it when the test ends (after the test's own
// nothing-left-behind check, which is registered after this).
func setupRunapp(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	y := strings.ReplaceAll(runappYAML, "TESTAPP", testapp)
	if out, err := kubectlCtx(ctx, y, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply runapp: %v: %s", err, out)
	}
	t.Cleanup(func() { kubectlCtx(context.Background(), y, "delete", "-f", "-", "--wait=true") })
	if out, err := kubectlCtx(ctx, "", "-n", testNamespace, "rollout", "status", "deploy/runapp", "--timeout=120s"); err != nil {
		t.Fatalf("runapp: %v: %s", err, out)
	}
	eventuallyFromPod(t, "http://runapp/ready", "echo from runapp-")
}

func TestRun(t *testing.T) {
	setupRunapp(t)

	t.Run("environment, files, network and exit status, with its own connect", func(t *testing.T) {
		nothingLeftBehind(t)
		r := kt(t, "-n", testNamespace, "run", "deploy/runapp", "--shadow-expire-after", "15s", "--", "sh", "-c",
			`echo "token=$RUN_TOKEN"; cat "$KT_MOUNT_ROOT/etc/runapp/app.yaml" "$KT_MOUNT_ROOT/etc/creds/token"; echo; curl -sS -m 10 http://web/run; exit 7`)
		if r.Code != 7 {
			t.Errorf("exit %d, want the process's 7:\n%s", r.Code, r)
		}
		for _, want := range []string{"token=s3cret-run\n", "version: 1\n", "s3cret-run\n", "echo from web-"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("the process did not print %q:\n%s", want, r)
			}
		}
		for _, want := range []string{"kt: warning: not copied: /scratch (scratch: emptyDir", "kt: Connected to", "container app"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("kt did not say %q:\n%s", want, r)
			}
		}
		if strings.Contains(r.Stdout, "kt: ") {
			t.Errorf("kt's lines are in the process's output:\n%s", r.Stdout)
		}
	})

	t.Run("a ConfigMap edited while the process runs", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "run", "deploy/runapp", "--disable-tun", "--shadow-expire-after", "15s", "--", "sh", "-c",
			`while :; do cat "$KT_MOUNT_ROOT/etc/runapp/app.yaml"; sleep 0.2; done`)
		p.WaitFor("version: 1", 60*time.Second)
		t.Cleanup(func() {
			kubectl(t, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", `{"data":{"app.yaml":"version: 1\n"}}`)
		})
		t0 := time.Now()
		kubectl(t, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", `{"data":{"app.yaml":"version: 2\n"}}`)
		p.WaitFor("version: 2", 15*time.Second)
		t.Logf("the local file changed %s after the edit", time.Since(t0).Round(100*time.Millisecond))
		if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 130 {
			t.Errorf("exit %d after SIGINT, want 130 (the process's, killed by SIGINT):\n%s", code, p.Output())
		}
	})

	t.Run("--exchange: in-cluster callers reach the process", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "run", "svc/runapp", "--exchange", "--expose", "18090:80", "--shadow-expire-after", "15s", "--",
			testappBin(t), "serve", "-http", "127.0.0.1:18090", "-udp", "", "-name", "laptop-run")
		p.WaitFor("kt: Exchanged service", 90*time.Second)
		eventuallyFromPod(t, "http://runapp/exchanged", "echo from laptop-run")
		code := p.Stop(syscall.SIGINT, 60*time.Second)
		if code != 0 && code != 130 {
			t.Errorf("exit %d after SIGINT:\n%s", code, p.Output())
		}
		if !strings.Contains(p.Output(), "kt: Restored service") {
			t.Errorf("kt did not restore the Service:\n%s", p.Output())
		}
		eventuallyFromPod(t, "http://runapp/back", "echo from runapp-")
	})

	t.Run("--mesh: marked requests reach the process", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "run", "deploy/runapp", "--mesh", "version:run1", "--expose", "18091:80", "--shadow-expire-after", "15s", "--",
			testappBin(t), "serve", "-http", "127.0.0.1:18091", "-udp", "", "-name", "laptop-mesh")
		p.WaitFor("kt: Meshed service", 90*time.Second)
		eventually(t, 30*time.Second, "a marked request reaches the process", func() error {
			if r := inCluster(t, "/testapp get -H 'version: run1' http://runapp/marked"); !strings.Contains(r.Stdout, "echo from laptop-mesh") {
				return fmt.Errorf("marked: %s", r)
			}
			return nil
		})
		if r := inCluster(t, "/testapp get http://runapp/unmarked"); !strings.Contains(r.Stdout, "echo from runapp-") {
			t.Errorf("an unmarked request: %s", r)
		}
		if code := p.Stop(syscall.SIGINT, 90*time.Second); code != 0 && code != 130 {
			t.Errorf("exit %d after SIGINT:\n%s", code, p.Output())
		}
	})

	t.Run("--mirror: a copy of each request reaches the process, the pods answer", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "run", "svc/runapp", "--mirror", "--path-prefix", "/mirrored", "--expose", "18093:80", "--shadow-expire-after", "15s", "--",
			testappBin(t), "record", "-http", "127.0.0.1:18093")
		p.WaitFor("kt: Mirroring service", 90*time.Second)
		eventually(t, 30*time.Second, "a copy reaches the process", func() error {
			for _, path := range []string{"/outside", "/mirrored"} {
				if r := inCluster(t, "/testapp get http://runapp"+path); !strings.Contains(r.Stdout, "echo from runapp-") {
					t.Errorf("the original pods did not answer %s: %s", path, r)
				}
			}
			if !strings.Contains(p.Output(), `"path":"/mirrored"`) {
				return fmt.Errorf("no copy recorded:\n%s", p.Output())
			}
			return nil
		})
		if strings.Contains(p.Output(), `"path":"/outside"`) {
			t.Errorf("a request outside --path-prefix was copied:\n%s", p.Output())
		}
		if code := p.Stop(syscall.SIGINT, 90*time.Second); code != 0 && code != 130 {
			t.Errorf("exit %d after SIGINT:\n%s", code, p.Output())
		}
		if !strings.Contains(p.Output(), "kt: Restored service") {
			t.Errorf("kt did not restore the Service:\n%s", p.Output())
		}
	})

	t.Run("a running connect is used: no second TUN device or shadow", func(t *testing.T) {
		nothingLeftBehind(t)
		c := startConnect(t)
		r := kt(t, "-n", testNamespace, "run", "pod/"+runappPod(t), "--", "sh", "-c", `curl -sS -m 10 http://web/reuse && ip -o link show type tun | wc -l`)
		if r.Code != 0 || !strings.Contains(r.Stdout, "echo from web-") || !strings.HasSuffix(strings.TrimSpace(r.Stdout), "1") {
			t.Errorf("run over a running connect:\n%s", r)
		}
		if !strings.Contains(r.Stderr, "kt: using the kubectl kt connect already running") || strings.Contains(r.Stderr, "Connected to") {
			t.Errorf("kt started its own connect:\n%s", r)
		}
		pods, _ := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
		if len(pods.Items) != 1 {
			t.Errorf("%d kt pods, want connect's one", len(pods.Items))
		}
		c.Stop(syscall.SIGINT, 60*time.Second)
	})

	t.Run("SIGKILL of kt: the process ends, clean and clean --local-only remove the rest", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "run", "svc/runapp", "--exchange", "--expose", "18092:80", "--shadow-expire-after", "15s", "--",
			testappBin(t), "serve", "-http", "127.0.0.1:18092", "-udp", "", "-name", "laptop-killed")
		p.WaitFor("kt: Exchanged service", 90*time.Second)
		p.Kill()
		eventually(t, 10*time.Second, "the process ends with kt", func() error {
			if r := laptop(t, "curl", "-sS", "-m", "1", "http://127.0.0.1:18092/"); r.Code == 0 {
				return fmt.Errorf("the process still serves: %s", r)
			}
			return nil
		})
		if r := kt(t, "clean", "--local-only"); r.Code != 0 || !strings.Contains(r.Stdout, "the files of kubectl kt run or mount pid") {
			t.Errorf("clean --local-only:\n%s", r)
		}
		if r := kt(t, "-n", testNamespace, "clean", "--threshold", "0s"); r.Code != 0 {
			t.Errorf("clean:\n%s", r)
		}
	})

	t.Run("kubectl kt mount", func(t *testing.T) {
		nothingLeftBehind(t)
		dir := filepath.Join(t.TempDir(), "files")
		p := startKt(t, "-n", testNamespace, "mount", "deploy/runapp", dir)
		p.WaitFor("Ctrl-C to remove them", 60*time.Second)
		if b, err := os.ReadFile(filepath.Join(dir, "etc/runapp/app.yaml")); err != nil || string(b) != "version: 1\n" {
			t.Errorf("app.yaml: %q, %v", b, err)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("the directory: %v, %v", fi, err)
		}
		kubectl(t, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", `{"data":{"app.yaml":"version: 3\n"}}`)
		t.Cleanup(func() {
			kubectl(t, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", `{"data":{"app.yaml":"version: 1\n"}}`)
		})
		eventually(t, 15*time.Second, "the file follows the ConfigMap", func() error {
			if b, _ := os.ReadFile(filepath.Join(dir, "etc/runapp/app.yaml")); string(b) != "version: 3\n" {
				return fmt.Errorf("app.yaml: %q", b)
			}
			return nil
		})
		if code := p.Stop(syscall.SIGINT, 30*time.Second); code != 0 {
			t.Errorf("exit %d after SIGINT:\n%s", code, p.Output())
		}
		if _, err := os.Stat(dir); err == nil {
			t.Error("the files are left after Ctrl-C")
		}
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		nothingLeftBehind(t)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"run", "deploy/runapp"}, "put it after --"},
			{[]string{"run", "deploy/nope", "--", "true"}, "deployment kt-e2e/nope not found"},
			{[]string{"run", "deploy/runapp", "--expose", "8080", "--", "true"}, "--expose needs --exchange"},
			{[]string{"run", "deploy/runapp", "--mirror", "--mesh", "v:1", "--expose", "8080", "--", "true"}, "choose one"},
			{[]string{"run", "deploy/runapp", "--path-prefix", "/api/", "--", "true"}, "filter the copies of --mirror"},
			{[]string{"run", "deploy/runapp", "-c", "nope", "--", "true"}, `no container "nope"; its containers: sidecar, app`},
		} {
			r := kt(t, append([]string{"-n", testNamespace}, tc.args...)...)
			if r.Code != 2 || !strings.Contains(r.Stderr, tc.want) || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
				t.Errorf("%v: exit %d, want 2 and one line saying %q:\n%s", tc.args, r.Code, tc.want, r)
			}
		}
	})
}

// runappPod is the name of runapp's pod.
func runappPod(t *testing.T) string {
	t.Helper()
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app=runapp"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("runapp's pod: %v", err)
	}
	return pods.Items[0].Name
}
