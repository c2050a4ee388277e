//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// wanRTT is the round-trip time make bench-wan puts on the laptop's link to the API server.
const wanRTT = 40 * time.Millisecond

// wanLink is hack/delayproxy in front of the API server, and a laptop kubeconfig that goes
// through it. A link with no delay is the same path with the same hop, so that what one costs
// over the other is the delay alone.
type wanLink struct {
	kubeconfig string
	port       int
}

func startWANLink(b *testing.B, port int, rtt time.Duration) wanLink {
	b.Helper()
	startDelayProxy(b, port, "127.0.0.1:6443", rtt)
	raw, err := os.ReadFile(laptopKubecfg)
	if err != nil {
		b.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "https://10.243.1.1:6443", fmt.Sprintf("https://10.243.1.1:%d", port), 1)
	if cfg == string(raw) {
		b.Fatalf("%s does not name https://10.243.1.1:6443", laptopKubecfg)
	}
	l := wanLink{port: port, kubeconfig: writeFile(b, b.TempDir(), "kubeconfig", cfg)}
	if r := laptop(b, "kubectl", "--kubeconfig", l.kubeconfig, "get", "--raw", "/readyz"); r.Code != 0 {
		b.Fatalf("the API server through the delay proxy: %s", r)
	}
	return l
}

// digResult is one line of `testapp dig`.
type digResult struct {
	Name    string   `json:"name"`
	MS      float64  `json:"ms"`
	Rcode   string   `json:"rcode"`
	Answers []string `json:"answers"`
	Error   string   `json:"error"`
}

func laptopDig(tb testing.TB, names ...string) []digResult {
	tb.Helper()
	r := laptop(tb, append([]string{testappBin(tb), "dig"}, names...)...)
	var out []digResult
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		var d digResult
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			tb.Fatalf("dig: %v\n%s", err, r)
		}
		if d.Error != "" {
			tb.Fatalf("dig %s: %s", d.Name, d.Error)
		}
		out = append(out, d)
	}
	if len(out) != len(names) {
		tb.Fatalf("dig answered %d of %d names:\n%s", len(out), len(names), r)
	}
	return out
}

// wanSample is what one pass over one link measured, in milliseconds.
type wanSample map[string]float64

// wanOps are the table's rows: what each sample holds, in order.
var wanOps = []struct{ key, metric, goal string }{
	{"echo", "calibration: one round trip of a byte on a kept connection through the delay proxy alone", "1"},
	{"newconn-first", "new TCP connection + HTTP request to a ClusterIP, the first to it (the dial waited for)", "≤ 2"},
	{"newconn", "new TCP connection + HTTP request to a ClusterIP, after one (p50 of 15; the request goes with the dial)", "≤ 2"},
	{"pf-newconn", "the same through kubectl port-forward (p50)", ""},
	{"svc", "first lookup of a Service (`web.kt-e2e.svc.cluster.local`)", "0"},
	{"svc-search", "a search-list expansion of it (`web.kt-e2e.default.svc.cluster.local`, NXDOMAIN)", "0"},
	{"tunnel", "first lookup of a name that goes through the tunnel (a pod's `a-b-c-d.kt-e2e.pod` name)", "≤ 1"},
	{"cached", "the same name again (cached)", "0"},
	{"outside", "a name outside the cluster (the laptop's own resolver)", "0"},
	{"exchange", "an in-cluster client's new connection + request answered through exchange (p50)", "≤ 1.1"},
	{"connect", "`kubectl kt connect` to \"Connected\"", "≤ 10"},
}

// wanPass measures every row once over l: five connects (the first lookups are first in each),
// kubectl port-forward, and an exchange. connect's time is the shortest of the five: the
// shadow pod's own start (0.7-1.2 s here, with no link in it) varies by more than the round
// trips to count, and its shortest is the steadiest.
func wanPass(b *testing.B, l wanLink, svcIP string, try int) wanSample {
	b.Helper()
	s := wanSample{}
	var times, firsts, newconns, tunnels []float64
	const connects = 5
	for i := range connects {
		t0 := time.Now()
		p := startKt(b, "--kubeconfig", l.kubeconfig, "-n", testNamespace, "connect")
		for !strings.Contains(p.Output(), "Connected") { // polled finely: a round trip is 40 ms
			select {
			case <-p.done:
				b.Fatalf("connect exited:\n%s", p.Output())
			case <-time.After(2 * time.Millisecond):
			}
			if time.Since(t0) > 2*time.Minute {
				b.Fatalf("connect not connected:\n%s", p.Output())
			}
		}
		times = append(times, ms(time.Since(t0)))
		pod := fmt.Sprintf("10-244-%d-%d.kt-e2e.pod.cluster.local", 100+try, 10+i)
		d := laptopDig(b, "web.kt-e2e.svc.cluster.local", "web.kt-e2e.default.svc.cluster.local", pod, pod, "intranet.example")
		if d[0].Rcode != "NOERROR" || len(d[0].Answers) != 1 || !strings.HasSuffix(d[0].Answers[0], svcIP) || d[1].Rcode != "NXDOMAIN" || d[2].Rcode != "NOERROR" || d[4].Rcode != "NOERROR" {
			b.Fatalf("unexpected answers: %+v", d)
		}
		// One Service lookup and one search-list expansion a run: the first is the one to time.
		s["svc"] += d[0].MS / connects
		s["svc-search"] += d[1].MS / connects
		tunnels = append(tunnels, d[2].MS)
		s["cached"] += d[3].MS / connects
		s["outside"] += d[4].MS / connects
		firsts = append(firsts, laptopLoad(b, "http://"+svcIP+"/", "-n", "1", "-newconn").P50)
		newconns = append(newconns, laptopLoad(b, "http://"+svcIP+"/", "-n", "15", "-newconn").P50)
		stopClean(b, p)
	}
	s["connect"], s["newconn-first"], s["newconn"], s["tunnel"] = slices.Min(times), median(firsts), median(newconns), median(tunnels)

	port := 18100 + l.port%100
	pf := startProc(b, "ip", "netns", "exec", laptopNetns, "kubectl", "--kubeconfig", l.kubeconfig, "-n", testNamespace, "port-forward", "svc/web", fmt.Sprintf("%d:80", port))
	pf.WaitFor("Forwarding from", 30*time.Second)
	s["pf-newconn"] = median3(func() loadResult {
		return laptopLoad(b, fmt.Sprintf("http://127.0.0.1:%d/", port), "-n", "15", "-newconn")
	}, func(r loadResult) float64 { return r.P50 }).P50
	pf.Stop(syscall.SIGINT, 10*time.Second)

	p := startKt(b, "--kubeconfig", l.kubeconfig, "-n", testNamespace, "exchange", "web", "--expose", "8080:80")
	p.WaitFor("Exchanged service", 2*time.Minute)
	eventually(b, time.Minute, "exchanged web answering", func() error {
		if r := inCluster(b, "timeout 5 wget -qO- http://web/"); !strings.Contains(r.Stdout, "from laptop") {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	s["exchange"] = median3(func() loadResult { return podLoad(b, "http://web/", "-n", "15", "-newconn") },
		func(r loadResult) float64 { return r.P50 }).P50
	stopExchange(b, p)
	return s
}

// startEchoLink is a delay proxy, as in front of the API server, in front of an echo server
// of this process: what one round trip through the proxy alone measures, with the lateness
// of its timers in it, which every row's round trips carry too.
func startEchoLink(b *testing.B, port int, rtt time.Duration) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return startDelayProxy(b, port, l.Addr().String(), rtt)
}

// startDelayProxy runs hack/delayproxy on the laptop link's host end, port port, in front of
// to, and returns its address.
func startDelayProxy(b *testing.B, port int, to string, rtt time.Duration) string {
	b.Helper()
	addr := fmt.Sprintf("10.243.1.1:%d", port)
	bin := envOr("KT_DELAYPROXY_BIN", strings.TrimSuffix(ktBin, "kubectl-kt")+"delayproxy")
	startProc(b, bin, "-listen", addr, "-to", to, "-rtt", rtt.String()).WaitFor("delaying", 10*time.Second)
	return addr
}

// echoRTT is the median of 15 one-byte round trips on one connection to addr, in ms.
func echoRTT(b *testing.B, addr string) float64 {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var v []float64
	one := make([]byte, 1)
	for range 15 {
		t0 := time.Now()
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		v = append(v, ms(time.Since(t0)))
	}
	return median(v)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	return v[len(v)/2]
}

// BenchmarkWAN counts round trips: every row is measured over a link with no delay and over
// one that adds 40 ms to each round trip (hack/delayproxy in front of the API server; this
// kernel has no netem), and what the delay added, divided by 40 ms, is the number of round
// trips the operation waits for. No noise of this machine moves that count by much, where it
// moves every time measured in milliseconds.
func BenchmarkWAN(b *testing.B) {
	scale(b, "deploy", "web", 1)
	upstreamDNS(b)
	laptopServer(b, "laptop", "127.0.0.1:8080")
	svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	fast, slow := startWANLink(b, 16440, 0), startWANLink(b, 16441, wanRTT)
	echoFast, echoSlow := startEchoLink(b, 16442, 0), startEchoLink(b, 16443, wanRTT)
	// Two passes over each link, in turn, so that a drift of the shared machine lands on both.
	var f, s []wanSample
	for try := range 2 {
		f = append(f, wanPass(b, fast, svc.Spec.ClusterIP, 2*try))
		f[try]["echo"] = echoRTT(b, echoFast)
		s = append(s, wanPass(b, slow, svc.Spec.ClusterIP, 2*try+1))
		s[try]["echo"] = echoRTT(b, echoSlow)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n### round trips over a %v link (%s)\n\n| operation | no delay, ms | %v RTT, ms | round trips | goal |\n|---|---|---|---|---|\n",
		wanRTT, time.Now().UTC().Format("2006-01-02"), wanRTT)
	rtt := float64(wanRTT.Milliseconds())
	for _, op := range wanOps {
		a := min(f[0][op.key], f[1][op.key])
		z := min(s[0][op.key], s[1][op.key])
		fmt.Fprintf(&out, "| %s | %s | %s | %s | %s |\n", op.metric, f1(a), f1(z), f2((z-a)/rtt), op.goal)
		b.ReportMetric((z-a)/rtt, op.key+"-rtt")
	}
	fmt.Print(out.String())
	os.WriteFile(ktRoot+"/logs/bench-wan.md", []byte(out.String()), 0o644)
}
