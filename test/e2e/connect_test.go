//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// startConnect runs `kubectl kt connect` in the laptop netns and waits until it is connected.
func startConnect(t *testing.T, args ...string) *proc {
	t.Helper()
	p := startKt(t, append([]string{"-n", testNamespace, "connect", "--shadow-expire-after", "15s"}, args...)...)
	p.WaitFor("Connected", 60*time.Second)
	return p
}

// stopClean stops a connect with SIGINT and expects a clean exit.
func stopClean(t testing.TB, p *proc) {
	t.Helper()
	if code := p.Stop(syscall.SIGINT, 30*time.Second); code != 0 {
		t.Errorf("connect exited %d after SIGINT:\n%s", code, p.Output())
	}
	if !strings.Contains(p.Output(), "Disconnected") {
		t.Errorf("connect did not report its teardown:\n%s", p.Output())
	}
}

// upstreamDNS serves the laptop's original resolver (10.243.1.1, the host end of its veth):
// intranet.example resolves there, as another website's name would.
func upstreamDNS(t testing.TB) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "intranet.example." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("intranet.example. 30 IN A 10.243.1.1")
			m.Answer = append(m.Answer, rr)
		} else if r.Question[0].Name != "intranet.example." {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "10.243.1.1:53")
	if err != nil {
		t.Fatalf("upstream DNS: %v", err)
	}
	l, err := net.Listen("tcp", "10.243.1.1:53")
	if err != nil {
		t.Fatalf("upstream DNS: %v", err)
	}
	u, tc := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: l, Handler: h}
	go u.ActivateAndServe()
	go tc.ActivateAndServe()
	t.Cleanup(func() { u.Shutdown(); tc.Shutdown() })
}

// pattern is byte i of testapp's /bytes download (see testapp.Pattern).
func pattern(i int64) byte { return byte((i*7 + i/251) % 256) }

func patternSHA256(n int64) string {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		m := min(int64(len(buf)), n-off)
		for i := int64(0); i < m; i++ {
			buf[i] = pattern(off + i)
		}
		h.Write(buf[:m])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestConnect(t *testing.T) {
	nothingLeftBehind(t)
	upstreamDNS(t)
	ctx := context.Background()
	svc, err := client.CoreV1().Services(testNamespace).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db0, _ := client.CoreV1().Pods(testNamespace).Get(ctx, "db-0", metav1.GetOptions{})
	// before connect the laptop reaches nothing in the cluster, but its own upstream works
	if r := laptop(t, "curl", "-sS", "-m", "2", "http://"+svc.Spec.ClusterIP+"/"); r.Code == 0 {
		t.Fatalf("the laptop reaches a ClusterIP without connect: %s", r)
	}
	if r := laptop(t, "dig", "+short", "intranet.example"); !strings.Contains(r.Stdout, "10.243.1.1") {
		t.Fatalf("the laptop's own upstream DNS does not work before connect: %s", r)
	}

	p := startConnect(t)
	// Output goes to a pipe here: the wait is a plain line, without a terminal's spinner codes.
	if out := p.Output(); !strings.Contains(out, "Waiting for shadow pod "+testNamespace+"/") || strings.ContainsAny(out, "\r\033") {
		t.Errorf("progress in a pipe should be plain lines:\n%q", out)
	}

	curl := func(t *testing.T, url, want string) {
		t.Helper()
		r := laptop(t, "curl", "-sS", "-m", "10", url)
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Errorf("curl %s from the laptop:\n%s", url, r)
		}
	}
	t.Run("pod IP", func(t *testing.T) { curl(t, "http://"+db0.Status.PodIP+":8080/pod-ip", "echo from db-0") })
	t.Run("ClusterIP", func(t *testing.T) { curl(t, "http://"+svc.Spec.ClusterIP+"/cluster-ip", "echo from web-") })
	for _, name := range []string{"web", "web." + testNamespace, "web." + testNamespace + ".svc", "web." + testNamespace + ".svc.cluster.local"} {
		t.Run("name "+name, func(t *testing.T) { curl(t, "http://"+name+"/by-name", "echo from web-") })
	}
	t.Run("a port that stops listening: reset once, then refused", func(t *testing.T) { portStopsListening(t, true) })
	t.Run("StatefulSet pod name", func(t *testing.T) {
		curl(t, "http://db-0.db:8080/sts", "echo from db-0")
		curl(t, "http://db-0.db."+testNamespace+".svc.cluster.local:8080/sts", "echo from db-0")
	})
	t.Run("DNS answers", func(t *testing.T) {
		if r := laptop(t, "dig", "+short", "web."+testNamespace+".svc.cluster.local"); strings.TrimSpace(r.Stdout) != svc.Spec.ClusterIP {
			t.Errorf("dig A: %s", r)
		}
		if r := laptop(t, "dig", "AAAA", "web."+testNamespace+".svc.cluster.local"); !strings.Contains(r.Stdout, "status: NOERROR") || !strings.Contains(r.Stdout, "ANSWER: 0") {
			t.Errorf("dig AAAA of an IPv4-only Service: want an empty NOERROR\n%s", r)
		}
		if r := laptop(t, "dig", "+short", "SRV", "_http._tcp.web."+testNamespace+".svc.cluster.local"); !strings.Contains(r.Stdout, "80 web."+testNamespace) {
			t.Errorf("dig SRV: %s", r)
		}
		if r := laptop(t, "dig", "+short", "-x", svc.Spec.ClusterIP); !strings.Contains(r.Stdout, "web."+testNamespace+".svc.cluster.local") {
			t.Errorf("dig PTR: %s", r)
		}
	})
	t.Run("UDP DNS query to the cluster DNS service", func(t *testing.T) {
		r := laptop(t, "dig", "+short", "+notcp", "+time=5", "@10.96.0.10", "web."+testNamespace+".svc.cluster.local")
		if strings.TrimSpace(r.Stdout) != svc.Spec.ClusterIP {
			t.Errorf("dig @10.96.0.10 over UDP: %s", r)
		}
	})
	t.Run("UDP echo service", func(t *testing.T) {
		r := laptop(t, "bash", "-c", "exec 3<>/dev/udp/"+svc.Spec.ClusterIP+"/9090; echo hello-udp >&3; timeout 5 dd bs=1000 count=1 status=none <&3")
		if !strings.Contains(r.Stdout, "udp-echo web-") || !strings.Contains(r.Stdout, "hello-udp") {
			t.Errorf("UDP echo through connect: %s", r)
		}
	})
	t.Run("another website's name resolves through the original upstream", func(t *testing.T) {
		if r := laptop(t, "dig", "+short", "intranet.example"); strings.TrimSpace(r.Stdout) != "10.243.1.1" {
			t.Errorf("dig intranet.example while connected: %s", r)
		}
		if r := laptop(t, "dig", "nothing.example"); !strings.Contains(r.Stdout, "NXDOMAIN") {
			t.Errorf("an unknown outside name should be NXDOMAIN: %s", r)
		}
	})
	t.Run("1 GiB download intact", func(t *testing.T) {
		const n = 1 << 30
		want := patternSHA256(n)
		r := laptop(t, "bash", "-o", "pipefail", "-c", fmt.Sprintf("curl -sS -m 240 http://web/bytes?n=%d | sha256sum", n))
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, want) {
			t.Errorf("1 GiB download: sha256 %s, want %s\n%s", strings.Fields(r.Stdout + " x")[0], want, r.Stderr)
		}
	})
	t.Run("256 MiB upload intact", func(t *testing.T) {
		// a large upload moves to a stream of its own, while the server sends nothing back
		r := laptop(t, "bash", "-o", "pipefail", "-c",
			"f=$(mktemp) && head -c 268435456 /dev/urandom >$f && sha256sum <$f | cut -c1-64 &&"+
				" curl -sS -m 240 -T $f -X POST 'http://web/sink?sum=1'; rc=$?; rm -f $f; exit $rc")
		lines := strings.Fields(r.Stdout)
		if r.Code != 0 || len(lines) != 3 || lines[1] != "268435456" || lines[2] != lines[0] {
			t.Errorf("256 MiB upload: want the server to get every byte with our sha256, got %q\n%s", r.Stdout, r.Stderr)
		}
	})
	t.Run("200 concurrent connections", func(t *testing.T) {
		var urls []string
		for i := 0; i < 200; i++ {
			urls = append(urls, fmt.Sprintf("http://web/slow?d=1s&i=%d", i))
		}
		dir := t.TempDir()
		cfg := writeFile(t, dir, "urls", "url = \""+strings.Join(urls, "\"\nurl = \"")+"\"\n")
		t0 := time.Now()
		r := laptop(t, "curl", "-sS", "-m", "60", "--parallel", "--parallel-max", "200", "--parallel-immediate", "-K", cfg)
		if got := strings.Count(r.Stdout, "slow 1s from web-"); got != 200 {
			t.Errorf("%d of 200 concurrent requests answered:\n%s", got, r.Stderr)
		}
		if d := time.Since(t0); d > 20*time.Second {
			t.Logf("note: 200 one-second requests took %s", d)
		}
	})
	t.Run("4000 new connections in a row to one pod", func(t *testing.T) {
		// The laptop's kernel soon reuses source ports, while the stack held a connection
		// that the pod closed first in TIME-WAIT for 60 s and hung a new SYN on its 4-tuple.
		_, ip := webPod(t)
		r := laptop(t, testappBin(t), "load", "-url", "http://"+ip+":8080/", "-n", "4000", "-newconn", "-slow", "1s")
		lr := parseLoad(t, r)
		if lr.N != 4000 || lr.Max > 1000 {
			t.Errorf("%d of 4000 answered, the slowest in %.0f ms\n%s", lr.N, lr.Max, r.Stderr)
		}
	})
	t.Run("shadow pod deleted mid-session", func(t *testing.T) {
		pods, err := client.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleConnect})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("want one connect shadow, got %v %v", len(pods.Items), err)
		}
		old := pods.Items[0].Name
		if r := kubectl(t, "-n", testNamespace, "delete", "pod", old, "--wait=false"); r.Code != 0 {
			t.Fatal(r)
		}
		t0 := time.Now()
		// The old pod may serve a little longer while it terminates: recovery is a new shadow
		// and new connections through it, within 10 s.
		p.WaitFor("Reconnected through shadow", 10*time.Second)
		eventually(t, 10*time.Second-time.Since(t0), "new connections work after the shadow was deleted", func() error {
			r := laptop(t, "curl", "-sS", "-m", "2", "http://web/after-recovery")
			if r.Code != 0 || !strings.Contains(r.Stdout, "echo from web-") {
				return fmt.Errorf("%s", r.Stderr)
			}
			return nil
		})
		t.Logf("recovered in %s", time.Since(t0).Round(10*time.Millisecond))
		if !strings.Contains(p.Output(), "Reconnected through shadow") {
			t.Errorf("connect did not report the recovery:\n%s", p.Output())
		}
	})
	t.Run("a second connect is refused with the running one named", func(t *testing.T) {
		r := kt(t, "-n", testNamespace, "connect")
		if r.Code == 0 || !strings.Contains(r.Stderr, "already connected") || !strings.Contains(r.Stderr, "pid") {
			t.Errorf("second connect:\n%s", r)
		}
	})
	stopClean(t, p)
	if r := laptop(t, "curl", "-sS", "-m", "2", "http://"+svc.Spec.ClusterIP+"/"); r.Code == 0 {
		t.Errorf("the laptop still reaches the cluster after disconnecting")
	}
}

func TestConnectSIGKILL(t *testing.T) {
	nothingLeftBehind(t)
	p := startConnect(t)
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/"); r.Code != 0 {
		t.Fatalf("connect does not work: %s", r)
	}
	p.Kill()
	resolv, _ := os.ReadFile(laptopEtcNetns + "/resolv.conf")
	if !strings.Contains(string(resolv), "kubectl kt connect") {
		t.Fatalf("expected the crashed run's resolv.conf edit to remain, got:\n%s", resolv)
	}
	// the next connect undoes the crashed run's leftovers itself
	p2 := startConnect(t)
	if !strings.Contains(p2.Output(), "Cleaned up after an earlier connect") {
		t.Errorf("second connect did not report cleaning up:\n%s", p2.Output())
	}
	p2.Kill()
	// clean --local-only undoes local state; the crashed shadows expire by themselves and
	// clean deletes them once they have
	r := kt(t, "clean", "--local-only")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned local leftovers of connect pid") {
		t.Errorf("clean --local-only:\n%s", r)
	}
	eventually(t, 60*time.Second, "crashed shadows expire and clean removes them", func() error {
		r := kt(t, "-n", testNamespace, "clean", "--threshold", "1h")
		if r.Code != 0 {
			return fmt.Errorf("%s", r)
		}
		pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("%d kt pods remain (%v)", len(pods.Items), err)
		}
		return nil
	})
}

// cutLaptop makes packets from the laptop to the API server vanish (a network gone quiet:
// no resets, no errors) until the returned func is called (also at the test's end).
func cutLaptop(t *testing.T) (restore func()) {
	t.Helper()
	drop := []string{"OUTPUT", "-p", "tcp", "-d", apiServerFromLaptop, "--dport", "6443", "-j", "DROP"}
	if r := laptop(t, append([]string{"iptables", "-I"}, drop...)...); r.Code != 0 {
		t.Fatalf("cut the laptop off: %s", r)
	}
	var once sync.Once
	restore = func() { once.Do(func() { laptop(t, append([]string{"iptables", "-D"}, drop...)...) }) }
	t.Cleanup(restore)
	return restore
}

// TestConnectNetworkOutage: an idle laptop's network goes quiet for a minute (a closed lid:
// long enough for TCP's retransmissions to back off to half a minute; shorter than the
// shadow's expiry here). When it comes back, new connections work again within 10 s through
// the same shadow, and Ctrl-C still exits at once. Before the tunnel noticed unanswered
// pings, it waited for the old connection's next retransmission: the first request took
// 2.5 s, and DNS queries stuck on the dead tunnel held the exit for 29 s.
func TestConnectNetworkOutage(t *testing.T) {
	nothingLeftBehind(t)
	p := startConnect(t, "--shadow-expire-after", "90s")
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/before-outage"); r.Code != 0 {
		t.Fatalf("connect does not work: %s", r)
	}
	before := p.Output()
	restore := cutLaptop(t)
	time.Sleep(time.Minute)
	restore()
	t0 := time.Now()
	eventually(t, 10*time.Second, "new connections after the outage", func() error {
		r := laptop(t, "curl", "-sS", "-m", "2", "http://web/after-outage")
		if r.Code != 0 || !strings.Contains(r.Stdout, "echo from web-") {
			return fmt.Errorf("%s", r.Stderr)
		}
		return nil
	})
	t.Logf("working again %s after the network came back", time.Since(t0).Round(10*time.Millisecond))
	if strings.Contains(strings.TrimPrefix(p.Output(), before), "starting a new one") {
		t.Errorf("a minute's outage cost the shadow:\n%s", p.Output())
	}
	t1 := time.Now()
	if code := p.Stop(syscall.SIGINT, 10*time.Second); code != 0 {
		t.Errorf("connect exit %d after the outage:\n%s", code, p.Output())
	}
	t.Logf("Ctrl-C took %s", time.Since(t1).Round(10*time.Millisecond))
	if strings.Contains(p.Output(), "reflector.go") { // the watch of Service names
		t.Errorf("client-go's notes on a watch cut by the outage reached the user:\n%s", p.Output())
	}
}

// TestConnectLaptopVanishes: the laptop's network goes silent (packets to the API server
// vanish, as when a laptop is closed and carried off) and the client dies without a word.
// The agent's connections from the API server stay open, yet it counts the client gone
// once its SSH keepalives go unanswered and expires on time; back on the network, clean
// undoes the laptop's side.
func TestConnectLaptopVanishes(t *testing.T) {
	nothingLeftBehind(t)
	p := startConnect(t) // the shadow expires 15 s after its client is gone
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/"); r.Code != 0 {
		t.Fatalf("connect does not work: %s", r)
	}
	ctx := context.Background()
	pods, err := client.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleConnect})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one connect shadow, got %d %v", len(pods.Items), err)
	}
	shadow := pods.Items[0].Name
	restore := cutLaptop(t)
	p.Kill()
	t0 := time.Now()
	// three missed keepalives (10 s apart), then the 15 s expiry (it took 56 s here)
	eventually(t, 90*time.Second, "the shadow of the vanished laptop expires", func() error {
		pod, err := client.CoreV1().Pods(testNamespace).Get(ctx, shadow, metav1.GetOptions{})
		if err != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				return nil
			}
		}
		return fmt.Errorf("pod %s is %s", shadow, pod.Status.Phase)
	})
	t.Logf("the shadow expired %s after the laptop went silent", time.Since(t0).Round(time.Second))
	restore()
	if r := kt(t, "clean", "--local-only"); r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned local leftovers of connect pid") {
		t.Errorf("clean --local-only:\n%s", r)
	}
	eventually(t, 30*time.Second, "clean removes the expired shadow", func() error {
		if r := kt(t, "-n", testNamespace, "clean", "--threshold", "1h"); r.Code != 0 {
			return fmt.Errorf("%s", r)
		}
		if _, err := client.CoreV1().Pods(testNamespace).Get(ctx, shadow, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s remains", shadow)
		}
		return nil
	})
}

// portStopsListening serves a port in the client pod, connects to it from the laptop twice,
// stops it, and connects again. New connections to a destination that accepted one a moment
// ago complete their handshake at once (the dial's round trip saved): when it refuses after
// all, the client's connection is reset, once, and the next one is refused as without kt.
// With --tcp-early-for 0 (early false) the first one is refused already.
func portStopsListening(t *testing.T, early bool) {
	t.Helper()
	cl, err := client.CoreV1().Pods(testNamespace).Get(context.Background(), clientPodName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := inCluster(t, "/testapp serve -http :9099 -udp '' -name warm >/dev/null 2>&1 & echo $!")
	pid := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || pid == "" {
		t.Fatalf("start a server in the client pod: %s", r)
	}
	defer inCluster(t, "kill "+pid+" 2>/dev/null")
	url := "http://" + cl.Status.PodIP + ":9099/warm"
	eventually(t, 10*time.Second, "the client pod's server answering", func() error {
		if r := laptop(t, "curl", "-sS", "-m", "5", url); r.Code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	if r := laptop(t, "curl", "-sS", "-m", "10", url); r.Code != 0 || !strings.Contains(r.Stdout, "echo from warm") {
		t.Fatalf("curl %s: %s", url, r)
	}
	if r := inCluster(t, "kill "+pid+" && while kill -0 "+pid+" 2>/dev/null; do sleep 0.05; done"); r.Code != 0 {
		t.Fatalf("stop the server: %s", r)
	}
	if early {
		// The laptop's end accepted the connection before the pod refused it, then resets it:
		// curl sees the reset on its first read (exit 56), or, when the reset comes before
		// curl asks for the peer's address right after connecting, as that call's ENOTCONN
		// (exit 55, seen in CI).
		r := laptop(t, "curl", "-sS", "-m", "10", url)
		if !(r.Code == 56 && strings.Contains(r.Stderr, "reset")) && !(r.Code == 55 && strings.Contains(r.Stderr, "getpeername() failed with errno 107")) {
			t.Errorf("the first connection after the port closed: want a reset (curl exit 56, or 55 from getpeername), got %s", r)
		}
	}
	if r := laptop(t, "curl", "-sS", "-m", "10", url); r.Code != 7 {
		t.Errorf("the next connection: want it refused (curl exit 7, \"Couldn't connect\"), got %s", r)
	}
}

func TestConnectBadInput(t *testing.T) {
	nothingLeftBehind(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--include-ips", "10.0.0.0/33"}, "--include-ips"},
		{[]string{"--exclude-ips", "nope"}, "--exclude-ips"},
		{[]string{"--dns-mode", "magic"}, "--dns-mode"},
		{[]string{"--proxy-port", "3000"}, "only with --disable-tun"},
		{[]string{"--pod-quota", "lots"}, "--pod-quota"},
		{[]string{"--tcp-early-for", "-1s"}, "--tcp-early-for"},
	} {
		r := kt(t, append([]string{"-n", testNamespace, "connect"}, c.args...)...)
		lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
		if r.Code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("connect %v: want exit 2 and one line about %s, got:\n%s", c.args, c.want, r)
		}
	}
}

func TestConnectHostsMode(t *testing.T) {
	nothingLeftBehind(t)
	p := startConnect(t, "--dns-mode", "hosts:"+testNamespace, "--tcp-early-for", "0")
	hosts, _ := os.ReadFile(laptopEtcNetns + "/hosts")
	if !strings.Contains(string(hosts), "web."+testNamespace+".svc.cluster.local") || !strings.Contains(string(hosts), "db-0.db."+testNamespace) {
		t.Errorf("hosts block:\n%s", hosts)
	}
	for _, u := range []string{"http://web/", "http://web." + testNamespace + "/", "http://db-0.db:8080/"} {
		if r := laptop(t, "curl", "-sS", "-m", "10", u); r.Code != 0 || !strings.Contains(r.Stdout, "echo from") {
			t.Errorf("curl %s in hosts mode: %s", u, r)
		}
	}
	// a new Service appears in the block
	kubectl(t, "-n", testNamespace, "create", "service", "clusterip", "late", "--tcp=80:8080")
	t.Cleanup(func() { kubectl(t, "-n", testNamespace, "delete", "service", "late") })
	eventually(t, 15*time.Second, "a new Service appears in /etc/hosts", func() error {
		b, _ := os.ReadFile(laptopEtcNetns + "/hosts")
		if !strings.Contains(string(b), "late."+testNamespace) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// --tcp-early-for 0: every new connection waits for the dial, and a port that stopped
	// listening is refused at once.
	t.Run("a port that stops listening, with --tcp-early-for 0: refused", func(t *testing.T) { portStopsListening(t, false) })
	stopClean(t, p)
}

func TestConnectDisableTUNAsNormalUser(t *testing.T) {
	nothingLeftBehind(t)
	home := userHome(t)
	p := startProc(t, "ip", asUser(home, "-n", testNamespace, "connect", "--disable-tun", "--proxy-port", "12223", "--shadow-expire-after", "15s")...)
	p.WaitFor("export ALL_PROXY=socks5h://127.0.0.1:12223", 60*time.Second)
	r := laptop(t, "curl", "-sS", "-m", "10", "--socks5-hostname", "127.0.0.1:12223", "http://web."+testNamespace+"/via-socks")
	if r.Code != 0 || !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("curl through the SOCKS5 proxy:\n%s", r)
	}
	stopClean(t, p)
}

// TestConnectShadowDeployment: with --use-shadow-deployment the shadow runs from a Deployment;
// a deleted pod is replaced by it and connect moves to the new pod; after SIGKILL the agent
// deletes its own Deployment (and so its identity) once the client has been gone a while.
func TestConnectShadowDeployment(t *testing.T) {
	nothingLeftBehind(t)
	ctx := context.Background()
	p := startConnect(t, "--use-shadow-deployment")
	sel := metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy + "," + wire.RoleLabel + "=" + wire.RoleConnect}
	deps, err := client.AppsV1().Deployments(testNamespace).List(ctx, sel)
	if err != nil || len(deps.Items) != 1 {
		t.Fatalf("want one shadow deployment, got %v (%v)", len(deps.Items), err)
	}
	pods, _ := client.CoreV1().Pods(testNamespace).List(ctx, sel)
	if len(pods.Items) != 1 {
		t.Fatalf("want one shadow pod, got %d", len(pods.Items))
	}
	old := pods.Items[0].Name
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/via-deployment-shadow"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Fatalf("curl through the deployment's shadow: %s", r)
	}
	t0 := time.Now()
	if r := kubectl(t, "-n", testNamespace, "delete", "pod", old, "--wait=false"); r.Code != 0 {
		t.Fatal(r)
	}
	p.WaitFor("Reconnected through shadow", 10*time.Second)
	eventually(t, 10*time.Second-time.Since(t0), "new connections through the replacement pod", func() error {
		r := laptop(t, "curl", "-sS", "-m", "2", "http://web/after-replacement")
		if !strings.Contains(r.Stdout, "echo from web-") {
			return fmt.Errorf("%s", r.Stderr)
		}
		return nil
	})
	t.Logf("the deployment's replacement pod served new connections after %s", time.Since(t0).Round(10*time.Millisecond))
	if !strings.Contains(p.Output(), "waiting for deployment "+deps.Items[0].Name+" to replace it") {
		t.Errorf("connect did not say it waits for the Deployment:\n%s", p.Output())
	}
	if d, err := client.AppsV1().Deployments(testNamespace).Get(ctx, deps.Items[0].Name, metav1.GetOptions{}); err != nil || d.UID != deps.Items[0].UID {
		t.Errorf("the same Deployment should carry on: %v", err)
	}

	p.Kill()
	r := kt(t, "clean", "--local-only")
	if r.Code != 0 {
		t.Errorf("clean --local-only: %s", r)
	}
	eventually(t, 90*time.Second, "the agent deletes its own Deployment, and its pods and identity go with it", func() error {
		for _, what := range []struct {
			kind string
			n    func() (int, error)
		}{
			{"deployments", func() (int, error) {
				l, err := client.AppsV1().Deployments(testNamespace).List(ctx, sel)
				return len(l.Items), err
			}},
			{"pods", func() (int, error) {
				l, err := client.CoreV1().Pods(testNamespace).List(ctx, sel)
				return len(l.Items), err
			}},
			{"service accounts", func() (int, error) {
				l, err := client.CoreV1().ServiceAccounts(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
				return len(l.Items), err
			}},
		} {
			if n, err := what.n(); err != nil || n > 0 {
				return fmt.Errorf("%d kt %s remain (%v)", n, what.kind, err)
			}
		}
		return nil
	})
}

// TestConnectShareShadow: two developers (here root with a TUN device, and a normal user with
// the SOCKS5 proxy) share one shadow; the one who started it leaves first and the other keeps
// working; the last one out removes it.
func TestConnectShareShadow(t *testing.T) {
	nothingLeftBehind(t)
	ctx := context.Background()
	first := startConnect(t, "--share-shadow")
	if !strings.Contains(first.Output(), "Created shadow pod "+testNamespace+"/kt-connect-shared") {
		t.Fatalf("the first developer should start the shared shadow:\n%s", first.Output())
	}
	home := userHome(t)
	second := startProc(t, "ip", asUser(home, "-n", testNamespace, "connect", "--share-shadow", "--disable-tun", "--proxy-port", "12224", "--shadow-expire-after", "15s")...)
	second.WaitFor("export ALL_PROXY=socks5h://127.0.0.1:12224", 60*time.Second)
	if !strings.Contains(second.Output(), "Joining shared shadow pod "+testNamespace+"/kt-connect-shared") {
		t.Errorf("the second developer should join the shared shadow:\n%s", second.Output())
	}
	pods, err := client.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleConnect})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one connect shadow for both, got %d (%v)", len(pods.Items), err)
	}
	viaSOCKS := func(path string) result {
		return laptop(t, "curl", "-sS", "-m", "10", "--socks5-hostname", "127.0.0.1:12224", "http://web."+testNamespace+path)
	}
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/first"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("first developer (TUN): %s", r)
	}
	if r := viaSOCKS("/second"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("second developer (SOCKS5): %s", r)
	}

	stopClean(t, first)
	if _, err := client.CoreV1().Pods(testNamespace).Get(ctx, "kt-connect-shared", metav1.GetOptions{}); err != nil {
		t.Fatalf("the shared shadow went away while the second developer still uses it: %v", err)
	}
	if r := viaSOCKS("/second-after-first-left"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("second developer after the first left: %s", r)
	}
	stopClean(t, second)
	if _, err := client.CoreV1().Pods(testNamespace).Get(ctx, "kt-connect-shared", metav1.GetOptions{}); err == nil {
		t.Errorf("the last developer to leave should remove the shared shadow")
	}
	if _, err := client.CoreV1().Secrets(testNamespace).Get(ctx, "kt-connect-shared", metav1.GetOptions{}); err == nil {
		t.Errorf("the last developer to leave should remove the shared shadow's join key")
	}
}

// Service names resolve from connect's local copy, kept by a watch, with no round trip to the
// cluster; so do the names glibc makes by appending its search list to a name that is not a
// Service. What the copy cannot know (a StatefulSet pod's name) goes through the tunnel.
func TestConnectNamesFromAWatch(t *testing.T) {
	nothingLeftBehind(t)
	upstreamDNS(t)
	p := startConnect(t, "-v", "4")
	local := func(name string) bool {
		return strings.Contains(p.Output(), `"dns: from the local copy of Service names" q="`+name+`."`)
	}
	tunnel := func(name string) bool {
		return strings.Contains(p.Output(), `"dns: through the tunnel" q="`+name+`."`)
	}
	svc, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	for _, name := range []string{"web." + testNamespace, "web." + testNamespace + ".svc.cluster.local"} {
		if r := laptop(t, "dig", "+short", name); strings.TrimSpace(r.Stdout) != svc.Spec.ClusterIP {
			t.Errorf("dig %s: %s", name, r)
		}
		if !local(name) || tunnel(name) {
			t.Errorf("%s was not answered from the local copy:\n%s", name, p.Output())
		}
	}
	// glibc: web.nothere is not a cluster name (no such namespace), so the search list follows
	if r := laptop(t, "getent", "hosts", "web.nothere"); r.Code == 0 {
		t.Errorf("getent hosts web.nothere: %s", r)
	}
	for _, name := range []string{"web.nothere." + testNamespace + ".svc.cluster.local", "web.nothere.svc.cluster.local"} {
		if !local(name) || tunnel(name) {
			t.Errorf("the search-list expansion %s went through the tunnel:\n%s", name, p.Output())
		}
	}
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://db-0.db:8080/sts"); !strings.Contains(r.Stdout, "echo from db-0") {
		t.Errorf("a StatefulSet pod's name: %s", r)
	}
	// A headless Service and its StatefulSet's pod, by name and by SRV, from the local copy
	// of its EndpointSlices: the pod's IP as the API has it.
	pod, _ := client.CoreV1().Pods(testNamespace).Get(context.Background(), "db-0", metav1.GetOptions{})
	dbName, podName := "db."+testNamespace, "db-0.db."+testNamespace+".svc.cluster.local"
	if r := laptop(t, "dig", "+short", dbName); strings.TrimSpace(r.Stdout) != pod.Status.PodIP {
		t.Errorf("dig %s: %s, want %s", dbName, r, pod.Status.PodIP)
	}
	srv := "_http._tcp.db." + testNamespace + ".svc.cluster.local"
	if r := laptop(t, "dig", "+short", "SRV", srv); strings.TrimSpace(r.Stdout) != "0 100 8080 "+podName+"." {
		t.Errorf("dig SRV %s: %s", srv, r)
	}
	for _, name := range []string{podName, dbName, srv} {
		if !local(name) || tunnel(name) {
			t.Errorf("%s was not answered from the local copy:\n%s", name, p.Output())
		}
	}
	// A Service created now resolves at once, from the watch.
	kubectl(t, "-n", testNamespace, "create", "service", "clusterip", "kt-watched", "--tcp=80:8080")
	t.Cleanup(func() { kubectl(t, "-n", testNamespace, "delete", "service", "kt-watched", "--ignore-not-found") })
	created, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "kt-watched", metav1.GetOptions{})
	eventually(t, 5*time.Second, "the new Service resolves", func() error {
		if r := laptop(t, "dig", "+short", "kt-watched."+testNamespace+".svc.cluster.local"); strings.TrimSpace(r.Stdout) != created.Spec.ClusterIP {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	stopClean(t, p)
}
