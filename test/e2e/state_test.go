//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// state is what a test must leave as it found: every Service (labels, annotations, spec),
// every object carrying kt's label, and the laptop netns's links, addresses, routes, rules,
// iptables rules, resolv.conf and hosts.
type state struct {
	Services  map[string]string
	KtObjects []string
	Laptop    map[string]string
}

func snapshot(t testing.TB) state {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := state{Services: map[string]string{}, Laptop: map[string]string{}}
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	for _, svc := range svcs.Items {
		b, _ := json.Marshal(struct {
			Labels, Annotations map[string]string
			Spec                any
		}{svc.Labels, svc.Annotations, svc.Spec})
		s.Services[svc.Namespace+"/"+svc.Name] = string(b)
	}
	s.KtObjects = ktObjects(ctx, t)
	for name, args := range map[string][]string{
		"links":    {"-o", "link", "show"},
		"addrs":    {"-o", "addr", "show"},
		"routes4":  {"-4", "route", "show", "table", "all"},
		"routes6":  {"-6", "route", "show", "table", "all"},
		"rules":    {"rule", "show"},
		"iptables": nil,
	} {
		var r result
		if args == nil {
			r = laptop(t, "iptables-save")
		} else {
			r = runCmd(t, 10*time.Second, "ip", append([]string{"-n", laptopNetns}, args...)...)
		}
		out := r.Stdout
		if name == "iptables" {
			out = dropEmptyTables(out)
		}
		s.Laptop[name] = normalize(name, out)
	}
	// kubectl kt run's and mount's files, and their records (kt runs as root here).
	mounts, _ := filepath.Glob(filepath.Join(os.TempDir(), "kt-mount-*"))
	records, _ := filepath.Glob("/run/kubectl-kt/mount-*.json")
	s.Laptop["mounts"] = strings.Join(append(mounts, records...), "\n")
	for _, f := range []string{"resolv.conf", "hosts"} {
		b, err := os.ReadFile(laptopEtcNetns + "/" + f)
		if err != nil {
			t.Fatalf("read laptop %s: %v", f, err)
		}
		s.Laptop[f] = string(b)
	}
	return s
}

// dropEmptyTables leaves out of iptables-save's output every table that holds no rule, no
// user-defined chain and no policy but ACCEPT: such a table filters nothing, and whether the
// kernel shows it depends only on whether something has ever loaded it (as a test that cuts
// the laptop off with a DROP rule, and then deletes the rule, does).
func dropEmptyTables(out string) string {
	var kept, table []string
	empty := true
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table, empty = []string{l}, true
		case table == nil:
			kept = append(kept, l)
		case l == "COMMIT":
			if !empty {
				kept = append(kept, append(table, l)...)
			}
			table = nil
		default:
			table = append(table, l)
			if f := strings.Fields(l); strings.HasPrefix(l, "-") || len(f) > 1 && strings.HasPrefix(l, ":") && f[1] != "ACCEPT" {
				empty = false
			}
		}
	}
	return strings.Join(kept, "\n")
}

// normalize drops what changes without anyone touching it: counters, timestamps, link stats.
func normalize(kind, out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if kind == "iptables" && (strings.HasPrefix(l, "#") || strings.HasPrefix(l, ":")) {
			if strings.HasPrefix(l, ":") { // chain policy line: drop the counters
				l = strings.Fields(l)[0] + " " + strings.Fields(l)[1]
			} else {
				continue
			}
		}
		if kind == "links" || kind == "addrs" {
			if i := strings.Index(l, "valid_lft"); i >= 0 {
				l = l[:i]
			}
		}
		if strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimRight(l, " \\"))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func ktObjects(ctx context.Context, t testing.TB) []string {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy}
	var out []string
	add := func(kind string, err error, names ...string) {
		if err != nil {
			t.Fatalf("list %s: %v", kind, err)
		}
		for _, n := range names {
			out = append(out, kind+"/"+n)
		}
	}
	pods, err := client.CoreV1().Pods("").List(ctx, sel)
	if err == nil {
		for _, p := range pods.Items {
			add("pod", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("pod", err)
	svcs, err := client.CoreV1().Services("").List(ctx, sel)
	if err == nil {
		for _, p := range svcs.Items {
			add("service", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("service", err)
	deps, err := client.AppsV1().Deployments("").List(ctx, sel)
	if err == nil {
		for _, p := range deps.Items {
			add("deployment", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("deployment", err)
	cms, err := client.CoreV1().ConfigMaps("").List(ctx, sel)
	if err == nil {
		for _, p := range cms.Items {
			add("configmap", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("configmap", err)
	secs, err := client.CoreV1().Secrets("").List(ctx, sel)
	if err == nil {
		for _, p := range secs.Items {
			add("secret", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("secret", err)
	sas, err := client.CoreV1().ServiceAccounts("").List(ctx, sel)
	if err == nil {
		for _, p := range sas.Items {
			add("serviceaccount", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("serviceaccount", err)
	roles, err := client.RbacV1().Roles("").List(ctx, sel)
	if err == nil {
		for _, p := range roles.Items {
			add("role", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("role", err)
	rbs, err := client.RbacV1().RoleBindings("").List(ctx, sel)
	if err == nil {
		for _, p := range rbs.Items {
			add("rolebinding", nil, p.Namespace+"/"+p.Name)
		}
	}
	add("rolebinding", err)
	sort.Strings(out)
	return out
}

// nothingLeftBehind records the cluster's and the laptop's state now, and at the end of the
// test (after every kt process it started has stopped) asserts both are as they were. Call
// it first in a test, so that its check runs last.
func nothingLeftBehind(t *testing.T) {
	t.Helper()
	before := snapshot(t)
	if len(before.KtObjects) > 0 {
		// An earlier run leaked them (the leaking test failed for it): start from a clean slate.
		t.Logf("removing kt objects left by an earlier run: %v", before.KtObjects)
		purgeKtObjects(t)
		before = snapshot(t)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(20 * time.Second)
		for {
			after := snapshot(t)
			diff := cmp.Diff(before, after)
			if diff == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the test left state behind (-before +after):\n%s", diff)
				purgeKtObjects(t) // so that the next test is judged on its own
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
}

// purgeKtObjects restores what kt changed (as a user would, with clean) and force-deletes
// kt's pods and Services everywhere.
func purgeKtObjects(t testing.TB) {
	runCmd(t, time.Minute, ktBin, "--kubeconfig", hostKubeconfig, "clean", "-A", "--threshold", "0s")
	sel := wire.ManagedByLabel + "=" + wire.ManagedBy
	kubectl(t, "delete", "pods,services,deployments", "-A", "-l", sel, "--grace-period=0", "--force", "--wait=true")
}

func TestDropEmptyTables(t *testing.T) {
	save := strings.Join([]string{
		"# Generated by iptables-save",
		"*filter",
		":INPUT ACCEPT [0:0]",
		":FORWARD ACCEPT [3:180]",
		":OUTPUT ACCEPT [0:0]",
		"COMMIT",
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":KT - [0:0]",
		"COMMIT",
		"*mangle",
		":INPUT DROP [0:0]",
		"COMMIT",
		"*raw",
		":OUTPUT ACCEPT [0:0]",
		"-A OUTPUT -d 10.243.1.1/32 -j DROP",
		"COMMIT",
	}, "\n")
	got := dropEmptyTables(save)
	want := strings.Join([]string{
		"# Generated by iptables-save",
		"*nat", ":PREROUTING ACCEPT [0:0]", ":KT - [0:0]", "COMMIT",
		"*mangle", ":INPUT DROP [0:0]", "COMMIT",
		"*raw", ":OUTPUT ACCEPT [0:0]", "-A OUTPUT -d 10.243.1.1/32 -j DROP", "COMMIT",
	}, "\n")
	if got != want {
		t.Errorf("dropEmptyTables:\n%s\nwant:\n%s", got, want)
	}
}
