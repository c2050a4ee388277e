//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestConfigDefaultsApply(t *testing.T) {
	nothingLeftBehind(t)
	home := t.TempDir()
	run := func(args ...string) result {
		return runCmd(t, time.Minute, "ip", append([]string{"netns", "exec", laptopNetns, "env", "KT_HOME=" + home, ktBin, "--kubeconfig", laptopKubecfg}, args...)...)
	}
	if r := run("config", "set", "connect.dnsMode=hosts"); r.Code != 0 {
		t.Fatalf("config set KEY=VALUE with a kt-connect spelling:\n%s", r)
	}
	if r := run("config", "set", "global.pod-creation-timeout", "45s"); r.Code != 0 {
		t.Fatalf("config set KEY VALUE:\n%s", r)
	}
	if r := run("config", "set", "connect.no-such-flag", "1"); r.Code != 2 || !strings.Contains(r.Stderr, "no flag") {
		t.Errorf("config set of an unknown key:\n%s", r)
	}
	if r := run("config", "get", "connect.dns-mode"); !strings.Contains(r.Stdout, "connect.dns-mode = hosts") {
		t.Errorf("config get:\n%s", r)
	}
	if r := run("config", "save-profile", "hosts-mode"); r.Code != 0 {
		t.Errorf("save-profile:\n%s", r)
	}
	run("config", "unset", "--all")
	if r := run("config", "load-profile", "hosts-mode"); r.Code != 0 {
		t.Errorf("load-profile:\n%s", r)
	}
	// the default reaches connect: it runs in hosts mode without the flag
	p := startProc(t, "ip", "netns", "exec", laptopNetns, "env", "KT_HOME="+home, ktBin, "--kubeconfig", laptopKubecfg, "-n", testNamespace, "connect", "--shadow-expire-after", "15s")
	p.WaitFor("Connected", 60*time.Second)
	if !strings.Contains(p.Output(), "dns: hosts") {
		t.Errorf("connect did not take dns-mode from the config:\n%s", p.Output())
	}
	if hosts, _ := os.ReadFile(laptopEtcNetns + "/hosts"); !strings.Contains(string(hosts), "web."+testNamespace) {
		t.Errorf("hosts block missing:\n%s", hosts)
	}
	stopClean(t, p)
}

func TestStatusAndBirdseye(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	c := startConnect(t)
	ex := startExchange(t, "web", "--expose", "8080:80")
	r := kt(t, "-n", testNamespace, "status", "-o", "json")
	var rep struct {
		Connects []struct {
			Running bool   `json:"running"`
			Tunnel  string `json:"tunnel"`
			Shadow  string `json:"shadow"`
		} `json:"connects"`
		Services []struct{ Name, Status string } `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r)
	}
	if len(rep.Connects) != 1 || !rep.Connects[0].Running || rep.Connects[0].Tunnel != "healthy" {
		t.Errorf("status connects: %+v", rep.Connects)
	}
	if len(rep.Services) != 1 || rep.Services[0].Name != "web" || rep.Services[0].Status != "exchanged" {
		t.Errorf("status services: %+v", rep.Services)
	}
	r = kt(t, "-n", testNamespace, "birdseye", "--show-connector")
	lines := strings.Split(r.Stdout, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "web") || !strings.Contains(lines[1], "exchanged") || !strings.Contains(lines[1], "@") {
		t.Errorf("birdseye (sorted by status, exchanged first):\n%s", r)
	}
	if !strings.Contains(r.Stdout, "CONNECTED") || !strings.Contains(r.Stdout, "kt-connect-") {
		t.Errorf("birdseye --show-connector:\n%s", r)
	}
	if r := kt(t, "-n", testNamespace, "birdseye", "--hide-natural-service"); strings.Contains(r.Stdout, "normal") {
		t.Errorf("--hide-natural-service still lists normal Services:\n%s", r)
	}
	stopExchange(t, ex)
	stopClean(t, c)
	if r := kt(t, "status"); !strings.Contains(r.Stdout, "connect:") || !strings.Contains(r.Stdout, "not running") {
		t.Errorf("status after disconnect:\n%s", r)
	}
	_ = syscall.SIGINT
}

func TestDoctor(t *testing.T) {
	nothingLeftBehind(t)
	r := kt(t, "-n", testNamespace, "doctor")
	if r.Code != 0 || !strings.Contains(r.Stdout, "ok    may create pods/portforward") || !strings.Contains(r.Stdout, "cluster range 10.96.0.0/16 overlaps no local route") {
		t.Errorf("doctor as admin:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "shadow image") {
		t.Errorf("doctor did not check the shadow image:\n%s", r)
	}
	// as a user who may do nothing, doctor fails and names what is missing
	r = kt(t, "-n", testNamespace, "--as", "nobody-at-all", "doctor")
	if r.Code != 1 || !strings.Contains(r.Stdout, "FAIL  may not create pods/portforward") || !strings.Contains(r.Stdout, "docs/rbac.yaml") {
		t.Errorf("doctor as a user without rights:\n%s", r)
	}
}

// TestEnv: kubectl kt env prints what the container's process really gets from its spec, read
// back from the process itself (testapp /env), in each output format.
func TestEnv(t *testing.T) {
	nothingLeftBehind(t)
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app=multi"})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	for i, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			pod = &pods.Items[i]
		}
	}
	if pod == nil {
		t.Fatal("no running multi pod")
	}
	r := kt(t, "-n", testNamespace, "env", "pod/"+pod.Name, "-o", "json")
	var got map[string]string
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &got) != nil {
		t.Fatalf("kt env -o json:\n%s", r)
	}
	want := map[string]string{"GREETING": "hello there", "POD_NAME": pod.Name, "SELF": "http://" + pod.Name + ":8080/dev",
		"DB_PASSWORD": "p@ss 'word'", "MEM_MI": "256", "CFG_MODE": "dev", "CFG_LEVEL": "3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kt env: %v\nwant %v", got, want)
	}
	pr := inCluster(t, "wget -qO- http://"+pod.Status.PodIP+":8080/env")
	var real map[string]string
	if err := json.Unmarshal([]byte(pr.Stdout), &real); err != nil {
		t.Fatalf("the process's environment: %v\n%s", err, pr)
	}
	for k, v := range got {
		if real[k] != v {
			t.Errorf("%s: kt env says %q, the process has %q", k, v, real[k])
		}
	}
	// sh output, evaluated by a shell on the laptop; dotenv output, read line by line.
	sh := kt(t, "-n", testNamespace, "env", "deploy/multi", "-o", "sh")
	if e := laptop(t, "sh", "-c", sh.Stdout+"\nprintf '%s|%s' \"$DB_PASSWORD\" \"$GREETING\""); e.Stdout != "p@ss 'word'|hello there" {
		t.Errorf("kt env -o sh, evaluated:\n%s\n%s", e, sh)
	}
	if d := kt(t, "-n", testNamespace, "env", "svc/multi"); !strings.Contains(d.Stdout, "GREETING=\"hello there\"\n") || !strings.Contains(d.Stdout, "CFG_MODE=dev\n") {
		t.Errorf("kt env (dotenv):\n%s", d)
	}
	if b := kt(t, "-n", testNamespace, "env", "deploy/multi", "-o", "yaml"); b.Code != 2 || !strings.Contains(b.Stderr, "use one of dotenv, json, sh") {
		t.Errorf("a bad -o:\n%s", b)
	}
	if b := kt(t, "-n", testNamespace, "env", "deploy/multi", "-c", "nope"); b.Code != 1 || !strings.Contains(b.Stderr, `no container "nope"; its containers: multi`) {
		t.Errorf("a bad -c:\n%s", b)
	}
}

// TestUnpullableShadowImage: where the nodes cannot pull the shadow image (here every
// registry is a closed port), connect fails at once with how to use another registry, and
// leaves nothing; doctor points at a kt pod stuck pulling, and checks --image-pull-secret.
func TestUnpullableShadowImage(t *testing.T) {
	nothingLeftBehind(t)
	const image = "ghcr.io/kubectl-kt/shadow:v0.0.0-unpublished"
	r := kt(t, "-n", testNamespace, "connect", "--disable-tun", "--proxy-port", "12250", "--image", image)
	lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
	if last := lines[len(lines)-1]; r.Code != 1 || !strings.Contains(last, "cannot be pulled") || !strings.Contains(last, "--image REGISTRY/kubectl-kt/shadow:v0.0.0-unpublished") || !strings.Contains(last, "--image-pull-secret") {
		t.Errorf("connect with an image the nodes cannot pull:\n%s", r)
	}
	stuck := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kt-stuck","namespace":"` + testNamespace + `","labels":{"app.kubernetes.io/managed-by":"kubectl-kt"}},
"spec":{"terminationGracePeriodSeconds":0,"containers":[{"name":"shadow","image":"` + image + `"}]}}`
	if r := runCmdStdin(t, stuck, "kubectl", "--kubeconfig", hostKubeconfig, "apply", "-f", "-"); r.Code != 0 {
		t.Fatal(r)
	}
	t.Cleanup(func() {
		kubectl(t, "-n", testNamespace, "delete", "pod", "kt-stuck", "--grace-period=0", "--force", "--ignore-not-found")
	})
	eventually(t, 60*time.Second, "doctor points at the pod that cannot pull", func() error {
		r := kt(t, "-n", testNamespace, "doctor", "--image-pull-secret", "no-such-secret")
		if r.Code != 1 || !strings.Contains(r.Stdout, "FAIL  pod "+testNamespace+"/kt-stuck cannot pull "+image) ||
			!strings.Contains(r.Stdout, "FAIL  --image-pull-secret no-such-secret: no such Secret in namespace "+testNamespace) {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
}
