//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRun times `kubectl kt run` from its start to the first instruction of the
// process, with a connect already running and with its own, beside a bare `kubectl get` of
// the workload from the same netns (the floor of any kubectl plugin: a process start and an
// API round trip); and the delay from a ConfigMap edit to the local file, beside the
// kubelet's to the pod's file after the same edit.
func BenchmarkRun(b *testing.B) {
	setupRunapp(b)
	stamp := filepath.Join(b.TempDir(), "started")
	// toStart runs the process once and returns the time from kt's start to the process's.
	toStart := func(args ...string) time.Duration {
		os.Remove(stamp)
		argv := append([]string{"-n", testNamespace, "run", "deploy/runapp", "--shadow-expire-after", "15s"}, args...)
		t0 := time.Now()
		if r := kt(b, append(argv, "--", "sh", "-c", `date +%s.%N > "$0"`, stamp)...); r.Code != 0 {
			b.Fatalf("kubectl kt run: %s", r)
		}
		return time.Unix(0, 0).Add(secondsIn(b, stamp)).Sub(t0)
	}
	bare := func() time.Duration {
		t0 := time.Now()
		if r := laptop(b, "kubectl", "--kubeconfig", laptopKubecfg, "-n", testNamespace, "get", "deploy/runapp", "-o", "name"); r.Code != 0 {
			b.Fatalf("kubectl get: %s", r)
		}
		return time.Since(t0)
	}
	base := medianOf3(bare)
	ownTUN := medianOf3(func() time.Duration { return toStart() })
	ownSOCKS := medianOf3(func() time.Duration { return toStart("--disable-tun") })
	c := startKt(b, "-n", testNamespace, "connect")
	c.WaitFor("Connected", 60*time.Second)
	withConnect := medianOf3(func() time.Duration { return toStart() })
	stopClean(b, c)

	local, kubelet := refreshDelays(b)
	t := &table{title: "run: time to the process, and file refresh"}
	row := func(what string, d time.Duration, goal string) {
		t.add(what, f2(d.Seconds()), f2(base.Seconds()), f1(d.Seconds()/base.Seconds()), goal)
	}
	row("kubectl kt run to the process starting, a connect running, s", withConnect, "≤ 2")
	row("the same with its own connect (TUN through the sudo helper), s", ownTUN, "≤ 3")
	row("the same with its own connect, --disable-tun (SOCKS5), s", ownSOCKS, "")
	sort.Slice(local, func(i, j int) bool { return local[i] < local[j] })
	t.add("ConfigMap edit to the local file (3 edits: min, median, max), s",
		fmt.Sprintf("%s, %s, %s", f2(local[0].Seconds()), f2(local[1].Seconds()), f2(local[2].Seconds())),
		f1(kubelet.Seconds()), f2(local[1].Seconds()/kubelet.Seconds()), "a few s")
	t.rows = append(t.rows, []string{"(baseline: a bare kubectl get for the start times; the kubelet's refresh of the pod's file after the first edit)", "", "", "", ""})
	t.print(b)
	b.ReportMetric(withConnect.Seconds(), "s-to-start-with-connect")
	b.ReportMetric(ownTUN.Seconds(), "s-to-start-own-connect")
	b.ReportMetric(local[1].Seconds(), "s-file-refresh")
}

// refreshDelays edits runapp's ConfigMap three times under `kubectl kt mount` and returns how
// long each took to reach the local file, and how long the first took to reach the pod's.
func refreshDelays(b *testing.B) ([]time.Duration, time.Duration) {
	dir := filepath.Join(b.TempDir(), "files")
	m := startKt(b, "-n", testNamespace, "mount", "deploy/runapp", dir)
	m.WaitFor("Ctrl-C to remove them", 60*time.Second)
	b.Cleanup(func() {
		kubectl(b, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", `{"data":{"app.yaml":"version: 1\n"}}`)
	})
	pod := strings.TrimPrefix(strings.TrimSpace(kubectl(b, "-n", testNamespace, "get", "pods", "-l", "app=runapp",
		"--field-selector", "status.phase=Running", "-o", "name").Stdout), "pod/")
	if pod == "" || strings.Contains(pod, "\n") {
		b.Fatalf("want one runapp pod, got %q", pod)
	}
	var local []time.Duration
	var kubelet time.Duration
	for i := 2; i <= 4; i++ {
		want := fmt.Sprintf("version: %d\n", i)
		var watcher *exec.Cmd
		var mu sync.Mutex
		var seen bytes.Buffer
		said := func() string { mu.Lock(); defer mu.Unlock(); return seen.String() }
		if i == 2 { // a watcher in the pod says when its file changes
			watcher = exec.Command("kubectl", "--kubeconfig", hostKubeconfig, "-n", testNamespace, "exec", pod, "-c", "app", "--",
				"sh", "-c", fmt.Sprintf(`echo waiting; until grep -q 'version: %d' /etc/runapp/app.yaml; do sleep 0.05; done; echo changed`, i))
			watcher.Stdout = lockedWriter{&mu, &seen}
			if err := watcher.Start(); err != nil {
				b.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(said(), "waiting"); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the watcher in the pod did not start")
				}
			}
		}
		t0 := time.Now()
		kubectl(b, "-n", testNamespace, "patch", "configmap", "runapp-config", "-p", fmt.Sprintf(`{"data":{"app.yaml":%q}}`, want))
		for deadline := t0.Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if got, _ := os.ReadFile(filepath.Join(dir, "etc/runapp/app.yaml")); string(got) == want {
				local = append(local, time.Since(t0))
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the local file did not follow edit %d within 30 s:\n%s", i, m.Output())
			}
		}
		if watcher != nil {
			// The watcher says "changed" at once (exec's stream takes milliseconds; the
			// kubelet's refresh takes seconds to a minute).
			for deadline := t0.Add(3 * time.Minute); !strings.Contains(said(), "changed"); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					watcher.Process.Kill()
					b.Fatal("the kubelet did not refresh the pod's file within 3 minutes")
				}
			}
			kubelet = time.Since(t0)
			if err := watcher.Wait(); err != nil {
				b.Fatalf("the watcher in the pod: %v", err)
			}
		}
	}
	if code := m.Stop(syscall.SIGINT, 30*time.Second); code != 0 {
		b.Errorf("mount exited %d:\n%s", code, m.Output())
	}
	return local, kubelet
}

// secondsIn reads a `date +%s.%N` stamp from a file as a time since the epoch.
func secondsIn(tb testing.TB, path string) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("the process did not run: %v", err)
	}
	parts := strings.SplitN(strings.TrimSpace(string(raw)), ".", 2)
	if len(parts) != 2 {
		tb.Fatalf("stamp %q", raw)
	}
	sec, err1 := strconv.ParseInt(parts[0], 10, 64)
	nsec, err2 := strconv.ParseInt((parts[1] + "000000000")[:9], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("stamp %q", raw)
	}
	return time.Duration(sec)*time.Second + time.Duration(nsec)
}

func medianOf3(f func() time.Duration) time.Duration {
	ds := []time.Duration{f(), f(), f()}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[1]
}
