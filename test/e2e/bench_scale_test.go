//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// BenchmarkScale runs connect on a cluster with many Services: 2000 selectorless Services in
// 40 namespaces (KT_BENCH_SERVICES=10000 for 250 in each), the Services' names from connect's
// watch (localDNS) and in the hosts file (--dns-mode hosts: all 40 namespaces). Times are
// wall-clock on this machine, from the command's start to its "Connected" (WaitFor polls
// every 50 ms), and from a Service's creation to its line in the hosts file.
func BenchmarkScale(b *testing.B) {
	total := 2000
	if v, err := strconv.Atoi(os.Getenv("KT_BENCH_SERVICES")); err == nil && v > 0 {
		total = v
	}
	const nss = 40
	per := total / nss
	var names []string
	for i := range nss {
		names = append(names, fmt.Sprintf("kt-scale-%02d", i))
	}
	// Created by this process, 16 requests at a time; ones left by an interrupted run are
	// taken as they are.
	cfg := rest.CopyConfig(restConfig)
	cfg.QPS, cfg.Burst = 2000, 2000
	fast := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	t0 := time.Now()
	b.Cleanup(func() {
		runCmd(b, 10*time.Minute, "kubectl", append([]string{"--kubeconfig", hostKubeconfig, "delete", "namespace", "--wait=true", "--ignore-not-found"}, names...)...)
	})
	for _, ns := range names {
		if _, err := fast.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			b.Fatal(err)
		}
	}
	work := make(chan [2]string)
	var g errgroup.Group
	for range 16 {
		g.Go(func() error {
			for w := range work {
				s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: w[0], Name: w[1]}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
				if _, err := fast.CoreV1().Services(w[0]).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					return err
				}
			}
			return nil
		})
	}
	for _, ns := range names {
		for j := range per {
			work <- [2]string{ns, fmt.Sprintf("svc-%d", j)}
		}
	}
	close(work)
	if err := g.Wait(); err != nil {
		b.Fatalf("create %d Services: %v", total, err)
	}
	b.Logf("%d Services in %d namespaces created in %s", per*nss, nss, time.Since(t0).Round(time.Second))

	measure := func(args ...string) (connected time.Duration, p *proc) {
		t0 := time.Now()
		p = startKt(b, append([]string{"-n", testNamespace, "connect", "--shadow-expire-after", "15s"}, args...)...)
		p.WaitFor("Connected", 120*time.Second)
		return time.Since(t0), p
	}
	local, p := measure()
	r := laptop(b, "dig", "+short", "svc-1.kt-scale-17")
	if strings.TrimSpace(r.Stdout) == "" {
		b.Errorf("svc-1.kt-scale-17 does not resolve: %s", r)
	}
	time.Sleep(2 * time.Second)
	localRSS := vmKiB(b, p.cmd.Process.Pid, "VmHWM")
	stopClean(b, p)

	hosts, p := measure("--dns-mode", "hosts:"+strings.Join(names, ","))
	block, _ := os.ReadFile(laptopEtcNetns + "/hosts")
	entries := strings.Count(string(block), "\n10.")
	t1 := time.Now()
	kubectl(b, "-n", "kt-scale-20", "create", "service", "clusterip", "late", "--tcp=80:8080")
	var appeared time.Duration
	for time.Since(t1) < 60*time.Second {
		if b, _ := os.ReadFile(laptopEtcNetns + "/hosts"); strings.Contains(string(b), "late.kt-scale-20 ") {
			appeared = time.Since(t1)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if appeared == 0 {
		b.Errorf("a new Service never reached the hosts file")
	}
	hostsRSS := vmKiB(b, p.cmd.Process.Pid, "VmHWM")
	stopClean(b, p)

	t := &table{title: fmt.Sprintf("scale (connect with %d Services in %d namespaces)", per*nss, nss)}
	t.add("connect to Connected, localDNS, s", f2(local.Seconds()), "", "", "≤ 2")
	t.add(fmt.Sprintf("connect to Connected, --dns-mode hosts (%d namespaces, %d entries), s", nss, entries), f2(hosts.Seconds()), "", "", "≤ 3")
	t.add("a new Service in the hosts file, s", f2(appeared.Seconds()), "", "", "≤ 2")
	t.add("client peak RSS, localDNS (the watch of every Service), MiB", f1(localRSS/1024), "", "", "≤ 60")
	t.add("client peak RSS, hosts mode, MiB", f1(hostsRSS/1024), "", "", "≤ 60")
	t.print(b)
}
