//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// routerMirrors reads a router's copy counts, by session, from its health port.
func routerMirrors(tb testing.TB, pod string) map[string]wire.MirrorStats {
	tb.Helper()
	d := portforward.NewDialer(restConfig, client, testNamespace, pod)
	defer d.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.Dial(ctx, wire.HealthPort) }}}
	resp, err := hc.Get("http://router/mirrors")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var stats map[string]wire.MirrorStats
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		tb.Fatal(err)
	}
	return stats
}

// cpuSeconds is the user and system CPU time a process has used, from /proc/PID/stat.
func cpuSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command's closing parenthesis: state is the first, utime the 12th
	// and stime the 13th, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// ioCalls is the read and write system calls a process has made (every thread, /proc/PID/io):
// beside its CPU time, it tells whether a hop handles copies one by one or in batches.
func ioCalls(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "syscr" || k == "syscw" {
			f, _ := strconv.ParseFloat(v, 64)
			n += f
		}
	}
	return n
}

// machineCPUSeconds is the busy CPU time of the whole machine (every core), from /proc/stat.
func machineCPUSeconds(tb testing.TB) float64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	busy := 0.0
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i > 7 { // guest time is counted in user already
			break
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100
}

// BenchmarkMirror measures what mirroring costs the requests it copies. One mirror copies the
// requests under /m/ to the laptop; requests under /p/ go through the same router and are not
// copied: the router without mirroring, measured in turn with the mirrored ones in the same
// run. Beside them, the same requests through a plain TCP relay pod, copies of /s/ to a sink
// pod in the cluster (what the router alone costs, without the port-forward path to the
// laptop), and the CPU time and read and write calls per request of each process on the way
// (read from /proc: they all run on this machine).
func BenchmarkMirror(b *testing.B) {
	scale(b, "deploy", "web", 1)
	rec := recorder(b, "127.0.0.1:8080")
	paced := func(url string) func() loadResult {
		return func() loadResult { return podLoad(b, url, "-n", "3000", "-c", "8", "-rate", "1000", "-latencies") }
	}
	newConn := func(url string) func() loadResult {
		return func() loadResult { return podLoad(b, url, "-n", "300", "-newconn", "-latencies") }
	}
	// The relay goes to the web Service, which the mirror sends through the router: it is
	// measured first, as BenchmarkMesh measures it.
	startRelay(b)
	sinkIP := startSink(b)
	kr := median3(paced("http://relay/m/"), func(l loadResult) float64 { return l.P99 })
	args := []string{"-n", testNamespace, "mirror", "web", "--expose", "8080:80", "--path-prefix", "/m/", "--shadow-expire-after", "20s"}
	if v := os.Getenv("KT_BENCH_POD_PROXY"); v != "" { // false: the copies take the port-forward, to compare
		args = append(args, "--pod-proxy="+v)
	}
	m := startKt(b, args...)
	m.WaitFor("Mirroring service", 90*time.Second)
	routers, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "kubectl-kt.io/role=router"})
	if err != nil || len(routers.Items) != 1 {
		b.Fatalf("want one router pod: %v %d", err, len(routers.Items))
	}
	router := agentPID(routers.Items[0].Name)
	if router == 0 {
		b.Fatalf("no router process for pod %s on this node", routers.Items[0].Name)
	}
	shadows := shadowsOf(b, wire.RoleMesh)
	if len(shadows) != 1 || agentPID(shadows[0]) == 0 {
		b.Fatalf("want one mirror shadow process on this node: %v", shadows)
	}
	// Who spends the machine's CPU on a copy: the router, the shadow, kt and the local server
	// are read one by one; the rest (kubelet, API server, containerd) is what is left.
	procs := []struct {
		name string
		pid  int
	}{{"router", router}, {"shadow", agentPID(shadows[0])}, {"kt on the laptop", m.cmd.Process.Pid}, {"local server (testapp record)", rec.cmd.Process.Pid}}
	// The cluster's own processes on this node: a copy reaches the laptop through the API
	// server's pod proxy, or through the kubelet's port-forward (containerd, kubelet) and the
	// API server.
	for _, name := range []string{"kube-apiserver", "kubelet", "containerd", "etcd", "kube-proxy"} {
		if pid := pidNamed(name); pid != 0 {
			procs = append(procs, struct {
				name string
				pid  int
			}{name, pid})
		}
	}

	type cost struct {
		requests     int
		cpu, machine float64
		each         []float64 // CPU seconds, by procs
		calls        []float64 // read and write system calls, by procs
	}
	// How busy the machine is while a load runs: on its few cores, what the copies add lengthens
	// the queue for a CPU that every request waits in, the more so the busier it already is.
	type busy struct{ cpu, wall float64 }
	counted := func(c *cost, u *busy, load func() loadResult) func() loadResult {
		return func() loadResult {
			e0, s0 := make([]float64, len(procs)), make([]float64, len(procs))
			if c.each == nil {
				c.each, c.calls = make([]float64, len(procs)), make([]float64, len(procs))
			}
			for i, p := range procs {
				e0[i], s0[i] = cpuSeconds(b, p.pid), ioCalls(b, p.pid)
			}
			m0, t0 := machineCPUSeconds(b), time.Now()
			l := load()
			dm := machineCPUSeconds(b) - m0
			c.machine += dm
			u.cpu += dm
			u.wall += time.Since(t0).Seconds()
			for i, p := range procs {
				c.each[i] += cpuSeconds(b, p.pid) - e0[i]
				c.calls[i] += ioCalls(b, p.pid) - s0[i]
			}
			c.cpu = c.each[0]
			c.requests += l.N
			return l
		}
	}
	var mirrored, plain cost
	var nicedM, nicedP cost  // the laptop's processes niced, below
	var busyM, busyP [3]busy // by phase
	km, kp := pooled(b, counted(&mirrored, &busyM[0], paced("http://web/m/")), counted(&plain, &busyP[0], paced("http://web/p/")))
	// The router's part alone: copies of /s/ go to a sink pod in the cluster, which answers a
	// batch in one write, instead of through the port-forward path to the laptop. The member
	// joins for this phase only.
	leaveSink := joinMirror(b, "web", wire.MeshMember{Owner: "BenchmarkMirror", Session: "benchsink", Shadow: sinkIP, Mirror: true, PathPrefix: "/s/"})
	eventually(b, 30*time.Second, "the router mirrors to the sink", func() error {
		if _, ok := routerMirrors(b, routers.Items[0].Name)["benchsink"]; !ok {
			return fmt.Errorf("the router has no mirror for the sink yet")
		}
		return nil
	})
	sk, sb := pooled(b, paced("http://web/s/"), paced("http://web/p/"))
	var sunk wire.MirrorStats
	eventually(b, 30*time.Second, "the sink gets the copies", func() error {
		if sunk = routerMirrors(b, routers.Items[0].Name)["benchsink"]; sunk.Sent == 0 || sunk.Sent+sunk.Dropped < int64(sk.N) {
			return fmt.Errorf("the sink's copies: %+v of %d requests", sunk, sk.N)
		}
		return nil
	})
	leaveSink()
	slow := func(url string) func() loadResult {
		return func() loadResult { return podLoad(b, url, "-n", "600", "-c", "8", "-rate", "200", "-latencies") }
	}
	progress := func(phase string) {
		time.Sleep(3 * time.Second)
		sent, dropped := mirrorCounts(b)
		b.Logf("after %s: %d mirrored requests, %d copies recorded, status %d sent %d dropped", phase, mirrored.requests+nicedM.requests, len(recordedBy(rec, "/m/")), sent, dropped)
	}
	progress("paced")
	sm, sp := pooled(b, counted(&mirrored, &busyM[1], slow("http://web/m/")), counted(&plain, &busyP[1], slow("http://web/p/")))
	progress("slow")
	nm, np := pooled(b, counted(&mirrored, &busyM[2], newConn("http://web/m/")), counted(&plain, &busyP[2], newConn("http://web/p/")))
	progress("newconn")
	// The same paced load once more, with the laptop's processes (kt, the local server) at the
	// lowest priority: they run when the router, the shadow and the API server leave a core
	// idle, as if the laptop were a machine of its own. What is left is what a copy costs the
	// cluster's side, the port-forward or pod proxy path included.
	laptopPIDs := []int{m.cmd.Process.Pid, rec.cmd.Process.Pid}
	for _, pid := range laptopPIDs {
		renice(b, pid, 19)
	}
	var busyN [2]busy
	xm, xp := pooled(b, counted(&nicedM, &busyN[0], paced("http://web/m/")), counted(&nicedP, &busyN[1], paced("http://web/p/")))
	for _, pid := range laptopPIDs {
		renice(b, pid, 0)
	}
	copied := func() int { return mirrored.requests + nicedM.requests } // the CPU figures are the phases above
	progress("paced, the laptop niced")

	// Every copy of /m/ reached the laptop or was counted dropped, and none of /p/ was copied.
	var got int
	var dropped int64
	eventually(b, 30*time.Second, "the copies reach the laptop", func() error {
		var sent int64
		sent, dropped = mirrorCounts(b)
		got = len(recordedBy(rec, "/m/"))
		if got+int(dropped) < copied() || sent < int64(got) {
			return fmt.Errorf("%d of %d copies recorded; status: %d sent, %d dropped", got, copied(), sent, dropped)
		}
		return nil
	})
	if n := len(recordedBy(rec, "/p/")); n != 0 {
		b.Errorf("%d copies of requests outside --path-prefix", n)
	}
	st := routerMirrors(b, routers.Items[0].Name) // before the mirror leaves, and its counts with it
	if code := m.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(m.Output(), "Restored service") {
		b.Errorf("mirror exit %d:\n%s", code, m.Output())
	}

	us := func(c cost) float64 { return c.cpu / float64(c.requests) * 1e6 }
	machine := func(c cost) float64 { return c.machine / float64(c.requests) * 1e6 }
	path := "the port-forward (the API server, the kubelet, containerd)"
	if strings.Contains(m.Output(), "Connections come through the API server's pod proxy") {
		path = "the API server's pod proxy"
	}
	t := &table{title: "mirror: requests copied to the laptop through " + path + " vs the same router not copying"}
	cores := float64(runtime.NumCPU())
	for i, r := range []struct {
		what string
		k, b pooledLoad
	}{{"keep-alive, 8 workers at 1000 req/s", km, kp}, {"keep-alive, 8 workers at 200 req/s", sm, sp}, {"new-connection request", nm, np}} {
		t.add(fmt.Sprintf("%s, p50, ms (%d requests each, pooled)", r.what, r.k.N), f2(r.k.P50), f2(r.b.P50), f2(r.k.P50/r.b.P50), "≤ 1.05")
		t.add(fmt.Sprintf("%s, p99, ms (%d requests each, pooled)", r.what, r.k.N), f2(r.k.P99), f2(r.b.P99), f2(r.k.P99/r.b.P99), "≤ 1.05")
		t.add(fmt.Sprintf("%s: one round's p50 ratio, lowest to highest of %d", r.what, len(r.k.rounds)), "", "", spread(r.k, r.b, 0.5), "")
		t.add(fmt.Sprintf("%s: one round's p99 ratio, lowest to highest of %d", r.what, len(r.k.rounds)), "", "", spread(r.k, r.b, 0.99), "")
		um, up := busyM[i].cpu/busyM[i].wall/cores*100, busyP[i].cpu/busyP[i].wall/cores*100
		t.add(fmt.Sprintf("%s: the machine busy, %% of its %d cores", r.what, int(cores)), f1(um), f1(up), f2(um/up), "")
	}
	for _, q := range []struct {
		name string
		q    float64
		k, v float64
	}{{"p50", 0.5, xm.P50, xp.P50}, {"p99", 0.99, xm.P99, xp.P99}} {
		name, k, v := q.name, q.k, q.v
		t.add(fmt.Sprintf("the laptop's processes at nice 19 (as on a machine of their own), 1000 req/s, %s, ms (%d requests each, pooled)", name, xm.N), f2(k), f2(v), f2(k/v), "≤ 1.05")
		t.add(fmt.Sprintf("the laptop's processes at nice 19: one round's %s ratio, lowest to highest of %d", name, len(xm.rounds)), "", "", spread(xm, xp, q.q), "")
	}
	um, up := busyN[0].cpu/busyN[0].wall/cores*100, busyN[1].cpu/busyN[1].wall/cores*100
	t.add(fmt.Sprintf("the laptop's processes at nice 19: the machine busy, %% of its %d cores", int(cores)), f1(um), f1(up), f2(um/up), "")
	t.add(fmt.Sprintf("copies to a sink pod in the cluster instead (the router's part alone), 1000 req/s, p50, ms (%d requests each, pooled)", sk.N), f2(sk.P50), f2(sb.P50), f2(sk.P50/sb.P50), "")
	t.add(fmt.Sprintf("copies to a sink pod in the cluster instead (the router's part alone), 1000 req/s, p99, ms (%d requests each, pooled)", sk.N), f2(sk.P99), f2(sb.P99), f2(sk.P99/sb.P99), "")
	t.add("copies to a sink pod: one round's p99 ratio, lowest to highest", "", "", spread(sk, sb, 0.99), "")
	t.add(fmt.Sprintf("copies the sink answered / dropped, of %d requests", sk.N), strconv.FormatInt(sunk.Sent, 10), strconv.FormatInt(sunk.Dropped, 10), "", "")
	t.add("mirrored keep-alive p50, ms, vs a plain TCP relay pod", f2(km.P50), f2(kr.P50), f2(km.P50/kr.P50), "")
	t.add("mirrored keep-alive p99, ms, vs a plain TCP relay pod", f2(km.P99), f2(kr.P99), f2(km.P99/kr.P99), "")
	t.add("router CPU per request, µs", f1(us(mirrored)), f1(us(plain)), f2(us(mirrored)/us(plain)), "")
	t.add("router CPU per copy (the difference), µs", f1(us(mirrored)-us(plain)), "", "", "")
	t.add("machine CPU per request (every process: router, shadow, kubelet, API server, kt, local server), µs", f1(machine(mirrored)), f1(machine(plain)), f2(machine(mirrored)/machine(plain)), "")
	var rest float64
	for i, p := range procs {
		d := (mirrored.each[i]/float64(mirrored.requests) - plain.each[i]/float64(plain.requests)) * 1e6
		rest += d
		calls := mirrored.calls[i]/float64(mirrored.requests) - plain.calls[i]/float64(plain.requests)
		t.add("CPU per copy (mirrored minus not copied), "+p.name+", µs; reads and writes per copy (system calls)", f1(d), f2(calls), "", "")
	}
	t.add("CPU per copy, everything else on the machine (kernel work not charged to a process above, other pods), µs", f1(machine(mirrored)-machine(plain)-rest), "", "", "")
	if len(st) != 1 {
		b.Errorf("router mirrors: %v", st)
	}
	for _, s := range st {
		if s.Batches == 0 || s.Batches >= s.Sent {
			b.Errorf("copies were not batched: %+v", s)
		} else {
			t.add("HTTP/1.1 copies per batch the router sent (sent / batches)", f1(float64(s.Sent)/float64(s.Batches)), "", "", "")
		}
	}
	t.add(fmt.Sprintf("copies recorded on the laptop, of %d mirrored requests", copied()), strconv.Itoa(got), "", "", "")
	t.add("copies dropped (status)", strconv.FormatInt(dropped, 10), "", "", "")
	t.print(b)
	b.ReportMetric(km.P99/kp.P99, "paced-p99-ratio")
	b.ReportMetric(xm.P99/xp.P99, "niced-p99-ratio")
	b.ReportMetric(us(mirrored)-us(plain), "cpu-us-per-copy")
}

// renice sets the nice value of every thread of a process (a thread made later inherits it
// from the thread that makes it).
func renice(tb testing.TB, pid, n int) {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("threads of process %d: %v", pid, err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(task))
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil && err != syscall.ESRCH {
			tb.Fatalf("nice %d for thread %d of process %d: %v", n, tid, pid, err)
		}
	}
}

// pidNamed is the process of this name (its command, as in /proc/PID/comm), or 0 if none or
// more than one.
func pidNamed(name string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	found := 0
	for _, p := range procs {
		if comm, err := os.ReadFile(p + "/comm"); err == nil && strings.TrimSpace(string(comm)) == name {
			if found != 0 {
				return 0
			}
			found, _ = strconv.Atoi(filepath.Base(p))
		}
	}
	return found
}

// pooledRounds is how many times pooled runs each side.
const pooledRounds = 6

// pooledLoad is the latencies of several load runs pooled: P50 and P99 are over all of them.
type pooledLoad struct {
	loadResult
	rounds [][]int64 // each run's latencies, sorted, µs
}

// pooled runs kt and base in turn, pooledRounds times each, every second round with base
// first (so that neither side is always the one after a pause), and returns each side's
// percentiles over all its requests. Taking them in turn keeps the shared machine's drift out
// of their ratio; pooling thousands of requests keeps one run's noise out of a percentile.
func pooled(tb testing.TB, kt, base func() loadResult) (k, b pooledLoad) {
	for i := range pooledRounds {
		if i%2 == 0 {
			k.add(tb, kt())
			b.add(tb, base())
		} else {
			b.add(tb, base())
			k.add(tb, kt())
		}
	}
	return k, b
}

func (p *pooledLoad) add(tb testing.TB, l loadResult) {
	tb.Helper()
	if len(l.Latencies) != l.N {
		tb.Fatalf("load gave %d latencies for %d requests: run it with -latencies", len(l.Latencies), l.N)
	}
	us := slices.Clone(l.Latencies)
	slices.Sort(us)
	p.rounds = append(p.rounds, us)
	var all []int64
	for _, r := range p.rounds {
		all = append(all, r...)
	}
	slices.Sort(all)
	p.N = len(all)
	p.P50, p.P99 = quantile(all, 0.5), quantile(all, 0.99)
}

// quantile is the q-quantile of sorted latencies in µs, in ms, as testapp load takes it.
func quantile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(q*float64(len(sorted)-1))]) / 1000
}

// spread is the lowest and the highest ratio of one round's q-quantile, kt's to base's.
func spread(k, b pooledLoad, q float64) string {
	var rs []float64
	for i := range k.rounds {
		rs = append(rs, quantile(k.rounds[i], q)/quantile(b.rounds[i], q))
	}
	return f2(slices.Min(rs)) + " – " + f2(slices.Max(rs))
}

// sinkYAML is testapp sink, a mirror's stand-in for the laptop inside the cluster.
const sinkYAML = `
apiVersion: v1
kind: Pod
metadata: {name: mirror-sink, namespace: kt-e2e}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sink
    image: TESTAPP
    imagePullPolicy: IfNotPresent
    args: [sink, -http, ":8080"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
`

// startSink starts the sink pod and returns its IP.
func startSink(b *testing.B) string {
	b.Helper()
	startFixture(b, sinkYAML, "pod", "mirror-sink")
	pod, err := client.CoreV1().Pods(testNamespace).Get(context.Background(), "mirror-sink", metav1.GetOptions{})
	if err != nil || pod.Status.PodIP == "" {
		b.Fatalf("sink pod: %v", err)
	}
	return pod.Status.PodIP
}

// joinMirror adds member to the mesh of service as a developer's kt would, and keeps its
// heartbeat fresh until the returned func removes it. The bench writes the Service's
// annotation itself so that a member's "shadow" can be a pod of its own (the sink).
func joinMirror(b *testing.B, service string, member wire.MeshMember) (leave func()) {
	b.Helper()
	ctx := context.Background()
	change := func(f func(*wire.MeshState)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			svc, err := client.CoreV1().Services(testNamespace).Get(ctx, service, metav1.GetOptions{})
			if err != nil {
				return err
			}
			st, ok := wire.GetMesh(svc)
			if !ok {
				return fmt.Errorf("service %s is not meshed", service)
			}
			f(st)
			wire.SetMesh(svc, st)
			_, err = client.CoreV1().Services(testNamespace).Update(ctx, svc, metav1.UpdateOptions{})
			return err
		})
	}
	beat := func(st *wire.MeshState) {
		member.Heartbeat = time.Now().UTC()
		for i := range st.Members {
			if st.Members[i].Session == member.Session {
				st.Members[i].Heartbeat = member.Heartbeat
				return
			}
		}
		st.Members = append(st.Members, member)
	}
	if err := change(beat); err != nil {
		b.Fatalf("join the mesh of %s: %v", service, err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				change(beat)
			}
		}
	}()
	var once sync.Once
	leave = func() {
		once.Do(func() {
			close(stop)
			<-done
			if err := change(func(st *wire.MeshState) {
				st.Members = slices.DeleteFunc(st.Members, func(m wire.MeshMember) bool { return m.Session == member.Session })
			}); err != nil {
				b.Errorf("leave the mesh of %s: %v", service, err)
			}
		})
	}
	b.Cleanup(leave)
	return leave
}
