//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
