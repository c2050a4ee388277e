//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// resolvedNS runs systemd-resolved (unpacked by hack/resolved.sh) with a private D-Bus in a
// mount namespace of its own inside the laptop netns, with /etc/resolv.conf pointing at its
// stub, as on a desktop Linux. It returns a command prefix that enters that namespace.
func resolvedNS(t *testing.T) []string {
	t.Helper()
	root := ktRoot + "/resolved/root"
	if _, err := os.Stat(root + "/lib/systemd/systemd-resolved"); err != nil {
		t.Fatalf("systemd-resolved is not unpacked: run hack/resolved.sh (make test-e2e does)")
	}
	dir := t.TempDir()
	conf := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=/run/dbus/system_bus_socket</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>`
	os.WriteFile(dir+"/bus.conf", []byte(conf), 0o644)
	script := fmt.Sprintf(`set -e
mkdir -p /run/dbus /run/systemd
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/resolve
chown systemd-resolve:systemd-resolve /run/systemd/resolve
dbus-daemon --config-file=%[1]s/bus.conf --fork --nopidfile --print-pid > %[1]s/dbus.pid
%[2]s/lib/systemd/systemd-resolved > %[1]s/resolved.log 2>&1 &
echo $! > %[1]s/resolved.pid
for i in $(seq 50); do [ -e /run/systemd/resolve/stub-resolv.conf ] && break; sleep 0.1; done
mount --bind /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
`, dir, root)
	if r := runCmd(t, 30*time.Second, "ip", "netns", "exec", laptopNetns, "unshare", "-m", "--propagation", "private", "sh", "-c", script); r.Code != 0 {
		t.Fatalf("start systemd-resolved: %s", r)
	}
	pid := func(f string) int {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	resolved, bus := pid("resolved.pid"), pid("dbus.pid")
	t.Cleanup(func() {
		for _, p := range []int{resolved, bus} {
			if p > 0 {
				syscall.Kill(p, syscall.SIGTERM)
			}
		}
	})
	if resolved == 0 || bus == 0 {
		t.Fatalf("systemd-resolved or its bus did not start")
	}
	return []string{"nsenter", "--mount=/proc/" + strconv.Itoa(resolved) + "/ns/mnt", "--net=/var/run/netns/" + laptopNetns,
		"env", "PATH=" + root + "/usr/bin:" + os.Getenv("PATH")}
}

// TestConnectWithSystemdResolved: where systemd-resolved runs, connect gives its TUN device
// per-link DNS for the cluster's names and leaves resolv.conf alone; on exit the link goes.
func TestConnectWithSystemdResolved(t *testing.T) {
	nothingLeftBehind(t)
	ns := resolvedNS(t)
	in := func(args ...string) result { return runCmd(t, time.Minute, ns[0], append(ns[1:], args...)...) }
	stub := in("cat", "/etc/resolv.conf").Stdout
	p := startProc(t, ns[0], append(ns[1:], ktBin, "--kubeconfig", laptopKubecfg, "-n", testNamespace, "connect", "--shadow-expire-after", "15s")...)
	p.WaitFor("Connected to", 60*time.Second)
	if !strings.Contains(p.Output(), "systemd-resolved sends cluster.local") {
		t.Errorf("connect did not use systemd-resolved:\n%s", p.Output())
	}
	if got := in("cat", "/etc/resolv.conf").Stdout; got != stub {
		t.Errorf("resolv.conf changed under systemd-resolved:\n%s", got)
	}
	if r := in("resolvectl", "status", "kt0"); !strings.Contains(r.Stdout, "Current Scopes: DNS") || !strings.Contains(r.Stdout, "kt-e2e.svc.cluster.local") {
		t.Errorf("kt0 has no DNS scope with the cluster's domains:\n%s", r)
	}
	for _, name := range []string{"web", "web.kt-e2e", "web.kt-e2e.svc.cluster.local", "db-0.db.kt-e2e"} {
		if r := in("resolvectl", "query", name); r.Code != 0 || !strings.Contains(r.Stdout, name+": 10.") {
			t.Errorf("resolvectl query %s:\n%s", name, r)
		}
	}
	// Through glibc, as programs resolve: the stub, then resolved, then kt's server.
	if r := in("getent", "hosts", "web.kt-e2e.svc.cluster.local"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "10.") {
		t.Errorf("getent hosts: %s", r)
	}
	if r := in("curl", "-sS", "-m", "10", "http://web.kt-e2e/via-resolved"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("curl by name through systemd-resolved: %s", r)
	}
	stopClean(t, p)
	if r := in("resolvectl", "status", "kt0"); !strings.Contains(r.Stderr, "No such device") {
		t.Errorf("kt0 is still known to resolved after connect ended:\n%s", r)
	}
}
