//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// loadResult is what `testapp load` prints.
type loadResult struct {
	N          int     `json:"n"`
	Errors     int     `json:"errors"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	Seconds    float64 `json:"seconds"`
	MiBPerS    float64 `json:"mib_per_s"`
	ReqPerS    float64 `json:"req_per_s"`
	FirstError string  `json:"first_error"`
	Latencies  []int64 `json:"latencies_us"` // every request's, with testapp load -latencies
}

func parseLoad(tb testing.TB, r result) loadResult {
	tb.Helper()
	lr, err := decodeLoad(r)
	if err != nil {
		tb.Fatalf("load output: %v\n%s", err, r)
	}
	if lr.Errors > 0 {
		tb.Fatalf("load had %d errors (first: %s)", lr.Errors, lr.FirstError)
	}
	return lr
}

// decodeLoad reads the result that testapp load printed.
func decodeLoad(r result) (loadResult, error) {
	var lr loadResult
	err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &lr)
	return lr, err
}

// laptopLoad runs testapp's load generator in the laptop netns.
func laptopLoad(tb testing.TB, url string, args ...string) loadResult {
	tb.Helper()
	return parseLoad(tb, laptop(tb, append([]string{strings.TrimSuffix(ktBin, "kubectl-kt") + "testapp", "load", "-url", url}, args...)...))
}

// podLoad runs it in the client pod.
func podLoad(tb testing.TB, url string, args ...string) loadResult {
	tb.Helper()
	return parseLoad(tb, inCluster(tb, "/testapp load -url '"+url+"' "+strings.Join(args, " ")))
}

// sideBySide runs kt and base in turn, three times each, and returns the median of each by
// key: taking them in turn keeps a slow drift of the shared machine out of their ratio.
func sideBySide(kt, base func() loadResult, key func(loadResult) float64) (k, b loadResult) {
	var ks, bs []loadResult
	for range 3 {
		ks, bs = append(ks, kt()), append(bs, base())
	}
	med := func(rs []loadResult) loadResult {
		sort.Slice(rs, func(i, j int) bool { return key(rs[i]) < key(rs[j]) })
		return rs[1]
	}
	return med(ks), med(bs)
}

// median3 runs f three times and returns the median by key.
func median3(f func() loadResult, key func(loadResult) float64) loadResult {
	rs := []loadResult{f(), f(), f()}
	sort.Slice(rs, func(i, j int) bool { return key(rs[i]) < key(rs[j]) })
	return rs[1]
}

func vmKiB(tb testing.TB, pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// resetPeakRSS starts the process's VmHWM afresh from its current RSS (proc(5), clear_refs).
func resetPeakRSS(tb testing.TB, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		tb.Fatal(err)
	}
}

type table struct {
	title string
	rows  [][]string
}

func (t *table) add(metric, kt, base, ratio, goal string) {
	t.rows = append(t.rows, []string{metric, kt, base, ratio, goal})
}

func (t *table) print(tb testing.TB) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### %s (%s)\n\n| metric | kt | baseline | ratio | goal |\n|---|---|---|---|---|\n", t.title, time.Now().UTC().Format("2006-01-02"))
	for _, r := range t.rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Print(b.String())
	os.WriteFile(ktRoot+"/logs/bench-"+strings.ToLower(strings.Fields(t.title)[0])+".md", []byte(b.String()), 0o644)
}

func webPod(tb testing.TB) (string, string) {
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range pods.Items { // not one still terminating after a test deleted it
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return p.Name, p.Status.PodIP
		}
	}
	tb.Fatalf("no running web pod among %d", len(pods.Items))
	return "", ""
}

// startPortForward runs kubectl port-forward in the laptop netns: the raw tunnel kt rides on.
// It tunnels over WebSocket, kubectl's default since v1.31, unless spdy.
func startPortForward(tb testing.TB, target, ports string, spdy bool) {
	tb.Helper()
	p := startProc(tb, "ip", "netns", "exec", laptopNetns, "env", fmt.Sprintf("KUBECTL_PORT_FORWARD_WEBSOCKETS=%v", !spdy),
		"kubectl", "--kubeconfig", laptopKubecfg, "-n", testNamespace, "port-forward", target, ports)
	p.WaitFor("Forwarding from", 30*time.Second)
}

// BenchmarkConnect compares connect with kubectl port-forward to the same pod, side by side.
func BenchmarkConnect(b *testing.B) {
	scale(b, "deploy", "web", 1)
	podName, podIP := webPod(b)
	startPortForward(b, "pod/"+podName, "18090:8080", false)
	pf := "http://127.0.0.1:18090"
	startPortForward(b, "pod/"+podName, "18092:8080", true)
	pfSPDY := "http://127.0.0.1:18092"

	t0 := time.Now()
	p := startKt(b, "-n", testNamespace, "connect")
	for laptop(b, "curl", "-sS", "-m", "1", "http://"+podIP+":8080/").Code != 0 {
		if time.Since(t0) > 60*time.Second {
			b.Fatalf("connect never answered:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	firstReq := time.Since(t0)
	kt := "http://" + podIP + ":8080"
	const single = 512 << 20
	tput := func(l loadResult) float64 { return l.MiBPerS }
	download := func(base string, size int, flows string) func() loadResult {
		return func() loadResult {
			return laptopLoad(b, fmt.Sprintf("%s/bytes?n=%d", base, size), "-n", flows, "-c", flows)
		}
	}
	s1, s0 := sideBySide(download(kt, single, "1"), download(pf, single, "1"), tput)
	// kt tunnels over SPDY (kt's own session on the plain upgrade), which costs the API server
	// less than WebSocket: kubectl over the same transport is the like-for-like baseline.
	s2, s0s := sideBySide(download(kt, single, "1"), download(pfSPDY, single, "1"), tput)
	upload := func(base string) func() loadResult {
		return func() loadResult { return laptopLoad(b, base+"/sink", "-n", "1", "-upload", fmt.Sprint(single)) }
	}
	u1, u0 := sideBySide(upload(kt), upload(pf), tput)
	pid := p.cmd.Process.Pid
	lifePeak := vmKiB(b, pid, "VmHWM")
	resetPeakRSS(b, pid) // from here VmHWM is the peak under the 8-flow load
	p8, p80 := sideBySide(download(kt, 128<<20, "8"), download(pf, 128<<20, "8"), tput)
	rss := vmKiB(b, pid, "VmRSS")
	hwm := vmKiB(b, pid, "VmHWM")
	lifePeak = max(lifePeak, hwm)
	p99 := func(l loadResult) float64 { return l.P99 }
	newConns := func(base string) func() loadResult {
		return func() loadResult { return laptopLoad(b, base+"/", "-n", "1000", "-newconn") }
	}
	l1, l0 := sideBySide(newConns(kt), newConns(pf), p99)
	stopClean(b, p)

	t := &table{title: "connect vs kubectl port-forward"}
	t.add("single-flow download (512 MiB), MiB/s", f1(s1.MiBPerS), f1(s0.MiBPerS), f2(s1.MiBPerS/s0.MiBPerS), "≥ 1.0")
	t.add("the same against kubectl port-forward over SPDY, MiB/s", f1(s2.MiBPerS), f1(s0s.MiBPerS), f2(s2.MiBPerS/s0s.MiBPerS), "")
	t.add("single-flow upload (512 MiB), MiB/s", f1(u1.MiBPerS), f1(u0.MiBPerS), f2(u1.MiBPerS/u0.MiBPerS), "")
	t.add("8 parallel flows (8×128 MiB), MiB/s", f1(p8.MiBPerS), f1(p80.MiBPerS), f2(p8.MiBPerS/p80.MiBPerS), "≥ 1.0")
	t.add("new-connection request p50, ms", f2(l1.P50), f2(l0.P50), f2(l1.P50/l0.P50), "≤ 1.2")
	t.add("new-connection request p99, ms", f2(l1.P99), f2(l0.P99), f2(l1.P99/l0.P99), "≤ 1.2")
	t.add("connect to first successful request, s", f2(firstReq.Seconds()), "", "", "≤ 3")
	t.add("client RSS under the 8-flow load: peak (after), MiB", fmt.Sprintf("%s (%s)", f1(hwm/1024), f1(rss/1024)), "", "", "≤ 60")
	t.add("client RSS, peak of the whole run (startup included), MiB", f1(lifePeak/1024), "", "", "")
	t.print(b)
	b.ReportMetric(s1.MiBPerS/s0.MiBPerS, "single-flow-ratio")
	b.ReportMetric(s2.MiBPerS/s0s.MiBPerS, "single-flow-spdy-ratio")
	b.ReportMetric(u1.MiBPerS/u0.MiBPerS, "upload-ratio")
	b.ReportMetric(p8.MiBPerS/p80.MiBPerS, "8-flow-ratio")
	b.ReportMetric(l1.P99/l0.P99, "p99-latency-ratio")
}

// BenchmarkExchange compares requests through exchange with the same requests to the
// original pod, and a large response through exchange with kubectl port-forward.
func BenchmarkExchange(b *testing.B) {
	tt := b
	scale(tt, "deploy", "web", 1)
	podName, podIP := webPod(b)
	laptopServer(tt, "laptop", "127.0.0.1:8080")
	p99 := func(l loadResult) float64 { return l.P99 }
	tput := func(l loadResult) float64 { return l.MiBPerS }
	l0 := median3(func() loadResult { return podLoad(b, "http://"+podIP+":8080/", "-n", "300", "-newconn") }, p99)
	startPortForward(b, "pod/"+podName, "18091:8080", false)
	const big = 256 << 20
	d0 := median3(func() loadResult {
		return laptopLoad(b, fmt.Sprintf("http://127.0.0.1:18091/bytes?n=%d", big), "-n", "1")
	}, tput)

	t0 := time.Now()
	p := startKt(b, "-n", testNamespace, "exchange", "web", "--expose", "8080:80")
	for !strings.Contains(inCluster(b, "timeout 2 wget -qO- http://web/").Stdout, "from laptop") {
		if time.Since(t0) > 60*time.Second {
			b.Fatalf("exchange never answered:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := time.Since(t0)
	l1 := median3(func() loadResult { return podLoad(b, "http://web/", "-n", "300", "-newconn") }, p99)
	d1 := median3(func() loadResult { return podLoad(b, fmt.Sprintf("http://web/bytes?n=%d", big), "-n", "1") }, tput)
	stopExchange(tt, p)

	t := &table{title: "exchange vs direct"}
	t.add("request p50 (new connection), ms", f2(l1.P50), f2(l0.P50)+" (pod direct)", f2(l1.P50/l0.P50), "")
	t.add("request p99 (new connection), ms", f2(l1.P99), f2(l0.P99)+" (pod direct)", f2(l1.P99/l0.P99), "")
	t.add("256 MiB response, MiB/s", f1(d1.MiBPerS), f1(d0.MiBPerS)+" (port-forward)", f2(d1.MiBPerS/d0.MiBPerS), "")
	t.add("command to first exchanged request, s", f2(first.Seconds()), "", "", "")
	t.print(b)
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// relayYAML is a plain TCP relay in front of the web Service (testapp relay), reached through
// a Service of its own: the same path as the mesh router's, with nothing parsed.
const relayYAML = `
apiVersion: v1
kind: Pod
metadata: {name: relay, namespace: kt-e2e, labels: {app: relay}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: relay
    image: TESTAPP
    imagePullPolicy: IfNotPresent
    args: [relay, -listen, ":8080", -to, "web:80"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: relay, namespace: kt-e2e}
spec:
  selector: {app: relay}
  ports: [{port: 80, targetPort: 8080}]
`

// startFixture applies yaml (a testapp pod, TESTAPP its image, and what goes with it), deletes
// the objects of kinds named name when b ends, and waits until pod name is ready.
func startFixture(b *testing.B, yaml, kinds, name string) {
	b.Helper()
	if r := runCmdStdin(b, strings.ReplaceAll(yaml, "TESTAPP", testapp), "kubectl", "--kubeconfig", hostKubeconfig, "apply", "-f", "-"); r.Code != 0 {
		b.Fatalf("%s: %s", name, r)
	}
	b.Cleanup(func() {
		kubectl(b, "-n", testNamespace, "delete", kinds, name, "--grace-period=0", "--force", "--ignore-not-found")
	})
	kubectl(b, "-n", testNamespace, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=60s")
}

// startRelay starts the relay pod and its Service, and waits until it answers.
func startRelay(b *testing.B) {
	b.Helper()
	startFixture(b, relayYAML, "pod,svc", "relay")
	eventually(b, 30*time.Second, "relay Service answering", func() error {
		if r := inCluster(b, "timeout 5 wget -qO- http://relay/ready"); !strings.Contains(r.Stdout, "echo from") {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
}

// BenchmarkMesh measures what developers who are not meshing pay: requests without the mark
// through the router, against the same requests to the Service before the mesh. Latency is
// measured below saturation (new connections one at a time; 8 keep-alive workers paced at
// 1000 requests/s in all), since on a saturated 2-core node latency only mirrors the CPU spent
// per request; that cost shows in the saturated throughput row. Beside them, in the same run,
// the same keep-alive requests through a plain TCP relay pod: what a hop that parses nothing costs.
func BenchmarkMesh(b *testing.B) {
	scale(b, "deploy", "web", 1)
	laptopServer(b, "laptop", "127.0.0.1:8080")
	p99 := func(l loadResult) float64 { return l.P99 }
	rps := func(l loadResult) float64 { return l.ReqPerS }
	paced := func(url string) loadResult {
		return median3(func() loadResult { return podLoad(b, url, "-n", "3000", "-c", "8", "-rate", "1000") }, p99)
	}
	measure := func() (newConn, pacedKA, saturated loadResult) {
		newConn = median3(func() loadResult { return podLoad(b, "http://web/", "-n", "300", "-newconn") }, p99)
		pacedKA = paced("http://web/")
		saturated = median3(func() loadResult { return podLoad(b, "http://web/", "-n", "3000", "-c", "8") }, rps)
		return
	}
	d0, k0, s0 := measure()
	startRelay(b)
	r0 := paced("http://relay/")
	p := startMesh(b, "web", "--expose", "8080:80", "--version-mark", "version:bench")
	d1, k1, s1 := measure()
	routers, _ := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "kubectl-kt.io/role=router"})
	rss := 0.0
	if len(routers.Items) == 1 {
		rss = float64(agentHWM(b, routers.Items[0].Name)) / 1024
	}
	if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		b.Errorf("mesh exit %d", code)
	}
	t := &table{title: "mesh router vs direct (requests without the mark)"}
	t.add("new-connection request p50, ms", f2(d1.P50), f2(d0.P50), f2(d1.P50/d0.P50), "≤ 1.3")
	t.add("new-connection request p99, ms", f2(d1.P99), f2(d0.P99), f2(d1.P99/d0.P99), "≤ 1.3")
	t.add("keep-alive, 8 workers at 1000 req/s, p50, ms", f2(k1.P50), f2(k0.P50), f2(k1.P50/k0.P50), "≤ 1.3")
	t.add("keep-alive, 8 workers at 1000 req/s, p99, ms", f2(k1.P99), f2(k0.P99), f2(k1.P99/k0.P99), "≤ 1.3")
	t.add("the same through a plain TCP relay pod (io.Copy each way), p50, ms", f2(r0.P50), f2(k0.P50), f2(r0.P50/k0.P50), "")
	t.add("the same through a plain TCP relay pod (io.Copy each way), p99, ms", f2(r0.P99), f2(k0.P99), f2(r0.P99/k0.P99), "")
	t.add("saturated keep-alive throughput (8 workers), req/s", f1(s1.ReqPerS), f1(s0.ReqPerS), f2(s1.ReqPerS/s0.ReqPerS), "")
	t.add("router peak RSS under that load, MiB", f1(rss), "", "", "")
	t.print(b)
	b.ReportMetric(d1.P99/d0.P99, "newconn-p99-ratio")
	b.ReportMetric(k1.P99/k0.P99, "paced-p99-ratio")
}

// agentHWM is the peak RSS in KiB of the agent process of pod on this node.
func agentHWM(tb testing.TB, pod string) int {
	tb.Helper()
	if pid := agentPID(pod); pid != 0 {
		return int(vmKiB(tb, pid, "VmHWM"))
	}
	return 0
}

// agentPID is the PID of the agent process of pod on this node, or 0.
func agentPID(pod string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(p + "/environ")
		if err != nil || !strings.Contains(string(env), "HOSTNAME="+pod+"\x00") {
			continue
		}
		if cmd, _ := os.ReadFile(p + "/cmdline"); !strings.HasPrefix(string(cmd), "/shadow") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		return pid
	}
	return 0
}
