//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// laptopServer runs testapp's HTTP server in the laptop netns, as the developer's process.
func laptopServer(t testing.TB, name string, addrs ...string) {
	t.Helper()
	p := startProc(t, "ip", "netns", "exec", laptopNetns, testappBin(t), "serve", "-http", strings.Join(addrs, ","), "-udp", "", "-name", name)
	for _, a := range addrs {
		eventually(t, 10*time.Second, "laptop server on "+a, func() error {
			r := laptop(t, "curl", "-sS", "-m", "1", "http://"+a+"/")
			if r.Code != 0 {
				return fmt.Errorf("%s", r.Stderr)
			}
			return nil
		})
	}
	_ = p
}

func testappBin(t testing.TB) string {
	return envOr("KT_TESTAPP_BIN", strings.TrimSuffix(ktBin, "kubectl-kt")+"testapp")
}

// fromPod requests url from the client pod and returns the body.
func fromPod(t testing.TB, url string) result {
	t.Helper()
	return inCluster(t, "timeout 40 wget -qO- '"+url+"'")
}

// eventuallyFromPod waits until a request from the client pod answers with want.
func eventuallyFromPod(t testing.TB, url, want string) {
	t.Helper()
	// CoreDNS caches headless answers for up to 30 s, so a switch back can take that long.
	eventually(t, 45*time.Second, "GET "+url+" from a pod answers "+want, func() error {
		if r := fromPod(t, url); !strings.Contains(r.Stdout, want) {
			return fmt.Errorf("got %q %s", r.Stdout, r.Stderr)
		}
		return nil
	})
}

func startExchange(t *testing.T, args ...string) *proc {
	t.Helper()
	p := startKt(t, append([]string{"-n", testNamespace, "exchange", "--shadow-expire-after", "15s"}, args...)...)
	p.WaitFor("Exchanged service", 60*time.Second)
	return p
}

func stopExchange(t testing.TB, p *proc) {
	t.Helper()
	if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("exchange exited %d after SIGINT:\n%s", code, p.Output())
	}
	if !strings.Contains(p.Output(), "Restored service") {
		t.Errorf("exchange did not report restoring:\n%s", p.Output())
	}
}

func scale(t testing.TB, kind, name string, n int) {
	t.Helper()
	kubectl(t, "-n", testNamespace, "scale", kind+"/"+name, fmt.Sprintf("--replicas=%d", n))
	if n > 0 {
		kubectl(t, "-n", testNamespace, "rollout", "status", kind+"/"+name, "--timeout=90s")
	}
}

func TestExchange(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	svc, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	for _, replicas := range []int{0, 3, 1} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			scale(t, "deploy", "web", replicas)
			p := startExchange(t, "web", "--expose", "8080:80")
			// exchange waits until the endpoints are the shadow; kube-proxy follows within
			// about a second, which no client can observe on every node
			eventuallyFromPod(t, "http://web/first", "echo from laptop")
			for _, u := range []string{"http://web/by-name", "http://web." + testNamespace + ".svc.cluster.local/fqdn", "http://" + svc.Spec.ClusterIP + "/by-ip"} {
				if r := fromPod(t, u); !strings.Contains(r.Stdout, "echo from laptop") {
					t.Errorf("GET %s from a pod while exchanged:\n%s", u, r)
				}
			}
			if replicas == 1 {
				t.Run("streaming response", func(t *testing.T) {
					r := fromPod(t, "http://web/stream?n=20")
					if strings.Count(r.Stdout, "from laptop") != 20 {
						t.Errorf("stream through exchange:\n%s", r)
					}
				})
				t.Run("WebSocket", func(t *testing.T) {
					r := inCluster(t, "/testapp wsclient web:80 one two three")
					if strings.Count(r.Stdout, "ws-echo laptop:") != 3 {
						t.Errorf("websocket through exchange:\n%s", r)
					}
				})
				t.Run("long-lived idle connection", func(t *testing.T) {
					r := fromPod(t, "http://web/slow?d=25s")
					if !strings.Contains(r.Stdout, "slow 25s from laptop") {
						t.Errorf("a 25 s request through exchange:\n%s", r)
					}
				})
				t.Run("shadow deleted mid-exchange", func(t *testing.T) {
					pods, _ := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + wire.RoleExchange})
					if len(pods.Items) != 1 {
						t.Fatalf("want one exchange shadow, got %d", len(pods.Items))
					}
					kubectl(t, "-n", testNamespace, "delete", "pod", pods.Items[0].Name, "--wait=false")
					t0 := time.Now()
					eventually(t, 10*time.Second, "exchange recovers", func() error {
						if r := inCluster(t, "timeout 2 wget -qO- http://web/recovered"); !strings.Contains(r.Stdout, "echo from laptop") {
							return fmt.Errorf("%q %s", r.Stdout, r.Stderr)
						}
						return nil
					})
					t.Logf("recovered in %s", time.Since(t0).Round(10*time.Millisecond))
				})
			}
			stopExchange(t, p)
			if replicas > 0 {
				eventuallyFromPod(t, "http://web/restored", "echo from web-")
			}
		})
	}
}

func TestExchangeMultiPortNamed(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-main", "127.0.0.1:18080")
	laptopServer(t, "laptop-admin", "127.0.0.1:18081")
	// REMOTE by name (main is a named target port) and by target port number
	p := startExchange(t, "svc/multi", "--expose", "18080:main,18081:8081")
	// exchange waits until the endpoints are the shadow; kube-proxy follows within about a
	// second, which no client can observe (as in TestExchange)
	eventuallyFromPod(t, "http://multi:80/", "echo from laptop-main")
	eventuallyFromPod(t, "http://multi:81/", "echo from laptop-admin")
	stopExchange(t, p)
	eventuallyFromPod(t, "http://multi:81/", "echo from multi-")
}

func TestExchangeScaleMode(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	p := startExchange(t, "deploy/multi", "--expose", "8080:main", "--mode", "scale")
	d, _ := client.AppsV1().Deployments(testNamespace).Get(context.Background(), "multi", metav1.GetOptions{})
	if *d.Spec.Replicas != 0 {
		t.Errorf("scale mode left %d replicas", *d.Spec.Replicas)
	}
	eventuallyFromPod(t, "http://multi/scaled", "echo from laptop")
	stopExchange(t, p)
	d, _ = client.AppsV1().Deployments(testNamespace).Get(context.Background(), "multi", metav1.GetOptions{})
	if *d.Spec.Replicas != 2 || d.Status.ReadyReplicas != 2 || d.Annotations[wire.UndoAnnotation] != "" {
		t.Errorf("after scale mode: replicas %d ready %d annotations %v", *d.Spec.Replicas, d.Status.ReadyReplicas, d.Annotations)
	}
	eventuallyFromPod(t, "http://multi/back", "echo from multi-")
}

func TestExchangeStatefulSet(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-db", "127.0.0.1:8080")
	p := startExchange(t, "sts/db", "--expose", "8080")
	eventuallyFromPod(t, "http://db:8080/sts", "echo from laptop-db")
	stopExchange(t, p)
	eventuallyFromPod(t, "http://db:8080/sts", "echo from db-0")
}

func TestExchangeLock(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	p := startExchange(t, "web", "--expose", "8080:80")
	r := kt(t, "-n", testNamespace, "exchange", "web", "--expose", "8080:80")
	if r.Code != 1 || !strings.Contains(r.Stderr, "is exchanged by") || !strings.Contains(r.Stderr, "@") {
		t.Errorf("second exchange of a locked Service:\n%s", r)
	}
	stopExchange(t, p)
}

func TestExchangeSIGKILL(t *testing.T) {
	laptopServer(t, "laptop", "127.0.0.1:8080")
	t.Run("the shadow restores the Service by itself", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startKt(t, "-n", testNamespace, "exchange", "web", "--expose", "8080:80", "--shadow-expire-after", "10s")
		p.WaitFor("Exchanged service", 60*time.Second)
		eventuallyFromPod(t, "http://web/", "echo from laptop")
		p.Kill()
		t0 := time.Now()
		eventually(t, 40*time.Second, "the shadow restores the Service", func() error {
			svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil || svc.Spec.Selector["app"] != "web" || svc.Annotations[wire.LockAnnotation] != "" {
				return fmt.Errorf("selector %v", svc.Spec.Selector)
			}
			return nil
		})
		t.Logf("restored by the shadow %s after SIGKILL", time.Since(t0).Round(time.Second))
		eventuallyFromPod(t, "http://web/", "echo from web-")
	})
	t.Run("clean restores it", func(t *testing.T) {
		nothingLeftBehind(t)
		p := startExchange(t, "web", "--expose", "8080:80")
		p.Kill()
		r := kt(t, "-n", testNamespace, "clean", "--threshold", "0s")
		if r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned service "+testNamespace+"/web") {
			t.Errorf("clean:\n%s", r)
		}
		eventuallyFromPod(t, "http://web/", "echo from web-")
	})
}

func TestRecover(t *testing.T) {
	nothingLeftBehind(t)
	r := kt(t, "-n", testNamespace, "recover", "no-such-service")
	if r.Code != 1 || !strings.Contains(r.Stderr, "not found") || strings.Contains(r.Stderr, "panic") {
		t.Errorf("recover of a missing Service:\n%s", r)
	}
	laptopServer(t, "laptop", "127.0.0.1:8080")
	p := startExchange(t, "web", "--expose", "8080:80")
	p.Kill()
	r = kt(t, "-n", testNamespace, "recover", "web")
	if r.Code != 0 || !strings.Contains(r.Stdout, "restored") {
		t.Errorf("recover web:\n%s", r)
	}
	eventuallyFromPod(t, "http://web/", "echo from web-")
}

func TestExchangeBadInput(t *testing.T) {
	nothingLeftBehind(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"web"}, 2, "--expose is required"},
		{[]string{"web", "--expose", "8080:80:1"}, 2, "not LOCAL:REMOTE"},
		{[]string{"web", "--expose", "abc"}, 2, "not a number"},
		{[]string{"web", "--expose", "70000"}, 2, "from 1 to 65535"},
		{[]string{"web", "--expose", "8080", "--mode", "ephemeral"}, 2, "ephemeral"},
		{[]string{"web", "--expose", "8080:999", "--skip-port-checking"}, 1, "no port, target port or port name"},
		{[]string{"pod/x", "--expose", "8080"}, 1, "svc/NAME, deploy/NAME, sts/NAME or a Service NAME"},
		{[]string{"nosuch", "--expose", "8080"}, 1, "not found"},
		{[]string{"web", "--expose", "18999:80"}, 1, "nothing listens on localhost:18999"},
	} {
		r := kt(t, append([]string{"-n", testNamespace, "exchange"}, c.args...)...)
		lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
		if r.Code != c.code || !strings.Contains(lines[len(lines)-1], c.want) {
			t.Errorf("exchange %v: want exit %d and %q, got:\n%s", c.args, c.code, c.want, r)
		}
	}
}

// TestExchangeTakesOverStaleLock: a lock whose holder stopped sending heartbeats is named in a
// warning by any later command and can be taken over.
func TestExchangeTakesOverStaleLock(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	lock := fmt.Sprintf(`{"owner":"ghost@old-laptop","session":"ghost1","role":"exchange","since":%q,"heartbeat":%q}`, old, old)
	kubectl(t, "-n", testNamespace, "annotate", "service", "web", wire.LockAnnotation+"="+lock, wire.UndoAnnotation+`={"selector":{"app":"web"}}`)
	t.Cleanup(func() { kt(t, "-n", testNamespace, "recover", "web") })
	p := startExchange(t, "web", "--expose", "8080:80")
	out := p.Output()
	if !strings.Contains(out, "warning: service "+testNamespace+"/web is still exchanged by ghost@old-laptop") {
		t.Errorf("no warning about the stale exchange:\n%s", out)
	}
	if !strings.Contains(out, "Took over service "+testNamespace+"/web from ghost@old-laptop") {
		t.Errorf("the stale lock was not taken over:\n%s", out)
	}
	if r := fromPod(t, "http://web/taken-over"); !strings.Contains(r.Stdout, "echo from laptop") {
		t.Errorf("after the takeover:\n%s", r)
	}
	stopExchange(t, p)
}

// leaveUnderLoad runs leave (a developer's exit) while a client pod sends 300 requests a
// second to web's ClusterIP, each on a new connection, and checks that none fails or hangs:
// one that kube-proxy still sends to a pod that is gone would. They go to the ClusterIP:
// by name each also waited on the cluster's DNS (one request of 3000 once took 11.3 s in a
// CI run, as two 5 s resolver timeouts would). kube-proxy is paused for 4 s as the
// developer leaves, as a busy node's can lag: in one CI run a connection went to a deleted
// mesh router ("no route to host") after the endpoints had changed and kt had waited 1.5 s
// more; kt must keep the pod until it sees no more connections.
func leaveUnderLoad(t *testing.T, what string, leave func()) {
	t.Helper()
	web, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Pausing kube-proxy freezes its rules: they must be the Service's endpoints by then,
	// not the original pods that exchange's scale mode has just stopped.
	kubeProxyFollows(t, "web", "http")
	dropStaleConnections(t, web.Spec.ClusterIP)
	loadDone := make(chan result, 1)
	go func() {
		loadDone <- inCluster(t, "/testapp load -url http://"+web.Spec.ClusterIP+"/leaving -n 3000 -c 4 -rate 300 -newconn -slow 1s")
	}()
	time.Sleep(time.Second)
	stamp := func() string { return time.Now().UTC().Format("15:04:05.000") }
	paused := stamp()
	pauseKubeProxy(t, 4*time.Second)
	leave()
	left := stamp()
	select {
	case r := <-loadDone:
		t.Fatalf("the load ended before the developer had left, so it proves nothing: %s", r)
	default:
	}
	r := <-loadDone
	var lr loadResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &lr); err != nil || lr.Errors > 0 {
		ct := trackedConnections(t, web.Spec.ClusterIP)
		t.Fatalf("while %s (kube-proxy paused at %s for 4 s, left at %s): %d errors (first: %s)\n%s\nconntrack and neighbours at %s:\n%s", what, paused, left, lr.Errors, lr.FirstError, r, stamp(), ct)
	}
	if lr.N != 3000 || lr.Max > 1000 {
		ct := trackedConnections(t, web.Spec.ClusterIP)
		t.Errorf("while %s (kube-proxy paused at %s for 4 s, left at %s): %d of 3000 requests answered, the slowest in %.0f ms (a SYN sent to a pod that is gone waits a second or more)\n%s\nconntrack and neighbours at %s:\n%s", what, paused, left, lr.N, lr.Max, r.Stderr, stamp(), ct)
	}
	t.Logf("3000 new connections while %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms, 0 errors", what, lr.P50, lr.P99, lr.Max)
}

// dropStaleConnections makes the node forget the connections to a Service's address, before a
// load of new connections that must all succeed. Earlier tests leave it tracking connection
// attempts that went to a pod they deleted and were never answered: SYN_SENT for 120 s. The
// client pod's source ports wrap around every ~14000 connections, and a SYN from a reused
// port that meets such an entry is taken for a retransmission and follows it to the dead pod,
// whose address no longer answers ARP: "connect: no route to host". Seen in CI: one
// connection failed 8 s after kt had left, through an entry to a pod gone for two minutes,
// with 2 s of its 120 left; and twice in TestMesh, while the second developer left and
// nothing had deleted a pod since the tests before it. They are not the test's doing, and
// any Kubernetes client would meet them; call this only while nothing is connected.
func dropStaleConnections(t *testing.T, clusterIP string) {
	t.Helper()
	drop := runCmd(t, 10*time.Second, "sh", "-c", "conntrack -L -p tcp -d "+clusterIP+" 2>/dev/null | grep -v TIME_WAIT; conntrack -D -p tcp -d "+clusterIP+" >/dev/null 2>&1; true")
	if n := strings.Count(drop.Stdout, "\n"); n > 0 {
		t.Logf("dropped %d connections to the Service that the node still tracked as not closed:\n%s", n, drop.Stdout)
	}
}

// trackedConnections is what the node tracks for a Service's address, but for the closed
// connections (TIME_WAIT), and its neighbour table: where a failed connection went.
func trackedConnections(t *testing.T, clusterIP string) string {
	t.Helper()
	return runCmd(t, 10*time.Second, "sh", "-c", "conntrack -L -p tcp -d "+clusterIP+" 2>/dev/null | grep -v TIME_WAIT; ip neigh").Stdout
}

// Leaving an exchange under load refuses no connection: the forwards serve until the
// Service has left the shadow (selector mode) or the shadow has left the Service (scale
// mode) and kube-proxy has followed.
func TestExchangeLeavesUnderLoad(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	for _, mode := range []string{"selector", "scale"} {
		t.Run(mode, func(t *testing.T) {
			p := startExchange(t, "web", "--expose", "8080:80", "--mode", mode, "-v", "2") // timed steps, for a failure
			eventuallyFromPod(t, "http://web/first", "echo from laptop")
			leaveUnderLoad(t, "the exchange ended", func() { stopExchange(t, p) })
			eventuallyFromPod(t, "http://web/after", "echo from web-")
		})
	}
}

// kubeProxyFollows waits until kube-proxy's rules for the Service's port send connections to
// exactly its ready endpoints (the node's iptables, which the tests can read as root).
func kubeProxyFollows(t *testing.T, svc, port string) {
	t.Helper()
	re := regexp.MustCompile(`"` + regexp.QuoteMeta(testNamespace+"/"+svc+":"+port) + ` -> ([0-9.]+):[0-9]+"`)
	eventually(t, 15*time.Second, "kube-proxy's rules for "+svc+":"+port+" are its ready endpoints", func() error {
		slices, err := client.DiscoveryV1().EndpointSlices(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return err
		}
		var want []string
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
					want = append(want, ep.Addresses...)
				}
			}
		}
		r := runCmd(t, 10*time.Second, "iptables-save", "-t", "nat")
		var got []string
		for _, m := range re.FindAllStringSubmatch(r.Stdout, -1) {
			got = append(got, m[1])
		}
		sort.Strings(want)
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("rules %v, endpoints %v", got, want)
		}
		return nil
	})
}
