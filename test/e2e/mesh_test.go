//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func startMesh(t testing.TB, args ...string) *proc {
	t.Helper()
	p := startKt(t, append([]string{"-n", testNamespace, "mesh", "--shadow-expire-after", "20s"}, args...)...)
	p.WaitFor("Meshed service", 90*time.Second)
	return p
}

func withHeader(t *testing.T, header, url string) string {
	t.Helper()
	h := ""
	if header != "" {
		h = "--header '" + header + "' "
	}
	return inCluster(t, "timeout 20 wget -qO- "+h+"'"+url+"'").Stdout
}

func TestMesh(t *testing.T) {
	nothingLeftBehind(t)
	scale(t, "deploy", "web", 2)
	laptopServer(t, "laptop-dev1", "127.0.0.1:8080")
	laptopServer(t, "laptop-dev2", "127.0.0.1:8081")
	dev1 := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:dev1")
	if !strings.Contains(dev1.Output(), "header 'version: dev1'") {
		t.Errorf("mesh did not print the header to send:\n%s", dev1.Output())
	}
	if got := withHeader(t, "version: dev1", "http://web/marked"); !strings.Contains(got, "echo from laptop-dev1") {
		t.Errorf("marked request: %q", got)
	}
	if got := withHeader(t, "", "http://web/unmarked"); !strings.Contains(got, "echo from web-") {
		t.Errorf("unmarked request: %q", got)
	}
	if got := withHeader(t, "version: other", "http://web/other"); !strings.Contains(got, "echo from web-") {
		t.Errorf("request with another mark: %q", got)
	}

	// Under load from a pod, a second developer (with another header key) joins and leaves;
	// no request fails.
	web, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dropStaleConnections(t, web.Spec.ClusterIP)
	loadDone := make(chan result, 1)
	go func() {
		loadDone <- inCluster(t, "/testapp load -url http://web/load -n 1500 -c 8")
	}()
	time.Sleep(500 * time.Millisecond)
	dev2 := startMesh(t, "web", "--expose", "8081:80", "--version-mark", "x-dev:two")
	if got := withHeader(t, "x-dev: two", "http://web/dev2"); !strings.Contains(got, "echo from laptop-dev2") {
		t.Errorf("second developer's request: %q", got)
	}
	if got := withHeader(t, "version: dev1", "http://web/dev1"); !strings.Contains(got, "echo from laptop-dev1") {
		t.Errorf("first developer's request while both mesh: %q", got)
	}
	// The second developer's own marked requests, each on a new connection, keep being
	// answered while they leave: here until the router stops routing them, then by the
	// original pods. None fails.
	marked := make(chan result, 1)
	go func() {
		marked <- inCluster(t, "/testapp load -url http://web/dev2-leaving -H 'x-dev: two' -n 1500 -c 4 -rate 300 -newconn")
	}()
	time.Sleep(time.Second)
	if code := dev2.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(dev2.Output(), "Left the mesh") {
		t.Errorf("second developer leaving (exit %d):\n%s", code, dev2.Output())
	}
	r := <-marked
	if lr, err := decodeLoad(r); err != nil || lr.Errors > 0 || lr.N != 1500 {
		t.Errorf("the leaving developer's marked requests: %d of 1500 answered, %d errors (first: %s), %v\n%s\nconntrack and neighbours:\n%s",
			lr.N, lr.Errors, lr.FirstError, err, r, trackedConnections(t, web.Spec.ClusterIP))
	}
	lr := parseLoad(t, <-loadDone)
	if lr.N != 1500 {
		t.Errorf("under load: %d of 1500 requests answered", lr.N)
	}
	t.Logf("1500 requests under load while a developer joined and left: p50 %.2f ms, p99 %.2f ms, 0 errors", lr.P50, lr.P99)
	if got := withHeader(t, "version: dev1", "http://web/dev1-after"); !strings.Contains(got, "echo from laptop-dev1") {
		t.Errorf("first developer after the second left: %q", got)
	}

	t.Run("streaming response", func(t *testing.T) {
		if got := withHeader(t, "version: dev1", "http://web/stream?n=5"); strings.Count(got, "from laptop-dev1") != 5 {
			t.Errorf("stream: %q", got)
		}
	})
	t.Run("WebSocket", func(t *testing.T) {
		r := inCluster(t, "/testapp wsclient web:80 '-H=version: dev1' hello again")
		if strings.Count(r.Stdout, "ws-echo laptop-dev1:") != 2 {
			t.Errorf("websocket with the mark: %s", r)
		}
		r = inCluster(t, "/testapp wsclient web:80 hello")
		if !strings.Contains(r.Stdout, "ws-echo web-") {
			t.Errorf("websocket without the mark: %s", r)
		}
	})

	t.Run("TLS passes through to the original pods", func(t *testing.T) {
		// A TLS client's header cannot be read: even with the mark, the original pods answer.
		r := inCluster(t, "/testapp get -H 'version: dev1' https://web:80/tls")
		if !strings.Contains(r.Stdout, "tls=true echo from web-") {
			t.Errorf("TLS with the mark: %s", r)
		}
		if !strings.Contains(dev1.Output(), "TLS connections cannot be routed by header") {
			t.Errorf("mesh did not say that TLS passes through:\n%s", dev1.Output())
		}
		if r := inCluster(t, "/testapp get -H 'version: dev1' http://web:80/plain"); !strings.Contains(r.Stdout, "tls=false echo from laptop-dev1") {
			t.Errorf("plain HTTP with the mark on the same port: %s", r)
		}
	})

	// The last one out restores the Service and removes the router while unmarked requests
	// keep coming, each on a new connection: none of them fails or hangs.
	leaveUnderLoad(t, "the last developer left", func() {
		if code := dev1.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(dev1.Output(), "Restored service") {
			t.Errorf("last developer leaving (exit %d):\n%s", code, dev1.Output())
		}
	})
	svc, _ := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
	if svc.Spec.Selector["app"] != "web" || svc.Annotations[wire.MeshAnnotation] != "" {
		t.Errorf("service after the mesh: selector %v annotations %v", svc.Spec.Selector, svc.Annotations)
	}
	eventuallyFromPod(t, "http://web/after-mesh", "echo from web-")
	scale(t, "deploy", "web", 1)
}

func TestMeshGRPC(t *testing.T) {
	nothingLeftBehind(t)
	startProc(t, "ip", "netns", "exec", laptopNetns, testappBin(t), "grpc-serve", "-addr", "127.0.0.1:9000", "-name", "laptop")
	time.Sleep(300 * time.Millisecond)
	p := startMesh(t, "grpc", "--expose", "9000", "--version-mark", "version:dev1")
	r := inCluster(t, "/testapp grpc-check -addr grpc:9000 -service laptop -md version=dev1")
	if !strings.Contains(r.Stdout, "check SERVING") || !strings.Contains(r.Stdout, "watch SERVING") {
		t.Errorf("gRPC unary and streaming with the mark as metadata should reach the laptop:\n%s", r)
	}
	r = inCluster(t, "/testapp grpc-check -addr grpc:9000 -service cluster")
	if !strings.Contains(r.Stdout, "check SERVING") || !strings.Contains(r.Stdout, "watch SERVING") {
		t.Errorf("gRPC without the mark should reach the cluster's pods:\n%s", r)
	}
	stopMesh(t, p)
}

func stopMesh(t *testing.T, p *proc) {
	t.Helper()
	if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mesh exited %d:\n%s", code, p.Output())
	}
}

func TestMeshManual(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-manual", "127.0.0.1:8080")
	p := startKt(t, "-n", testNamespace, "mesh", "web", "--expose", "8080:80", "--mode", "manual", "--version-mark", "version:m1")
	p.WaitFor("route to pods labelled version=m1", 60*time.Second)
	pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web,version=m1"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one shadow labelled app=web,version=m1, got %d (%v)", len(pods.Items), err)
	}
	r := inCluster(t, "timeout 10 wget -qO- http://"+pods.Items[0].Status.PodIP+":8080/manual")
	if !strings.Contains(r.Stdout, "echo from laptop-manual") {
		t.Errorf("the labelled shadow forwards to the laptop:\n%s", r)
	}
	stopMesh(t, p)
}

func TestMeshConflictsAndBadInput(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"web", "--expose", "8080:80", "--version-mark", "x.dev:x"}, "the header name \"x.dev\" must be a letter"},
		{[]string{"web", "--expose", "8080:80", "--version-mark", "version:a b"}, "must be letters"},
		{[]string{"web", "--expose", "8080:80", "--mode", "magic"}, "use auto or manual"},
	} {
		r := kt(t, append([]string{"-n", testNamespace, "mesh"}, c.args...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("mesh %v: want exit 2 with %q:\n%s", c.args, c.want, r)
		}
	}
	// exchange and mesh exclude each other; the same mark twice is refused
	ex := startExchange(t, "web", "--expose", "8080:80")
	if r := kt(t, "-n", testNamespace, "mesh", "web", "--expose", "8080:80"); r.Code != 1 || !strings.Contains(r.Stderr, "is exchanged by") {
		t.Errorf("mesh of an exchanged Service:\n%s", r)
	}
	stopExchange(t, ex)
	m := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:same")
	if r := kt(t, "-n", testNamespace, "mesh", "web", "--expose", "8080:80", "--version-mark", "version:same"); r.Code != 1 || !strings.Contains(r.Stderr, "already used") {
		t.Errorf("a second mesh with the same mark:\n%s", r)
	}
	if r := kt(t, "-n", testNamespace, "exchange", "web", "--expose", "8080:80"); r.Code != 1 || !strings.Contains(r.Stderr, "is meshd by") && !strings.Contains(r.Stderr, "mesh") {
		t.Errorf("exchange of a meshed Service:\n%s", r)
	}
	stopMesh(t, m)
}

func TestMeshSIGKILLThenClean(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop", "127.0.0.1:8080")
	p := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:k1")
	p.Kill()
	r := kt(t, "-n", testNamespace, "clean", "--threshold", "0s")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned service "+testNamespace+"/web") || !strings.Contains(r.Stdout, "origin Service") {
		t.Errorf("clean after a killed mesh:\n%s", r)
	}
	eventuallyFromPod(t, "http://web/after-clean", "echo from web-")
}

func TestPreview(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-preview", "127.0.0.1:8080")
	p := startKt(t, "-n", testNamespace, "preview", "web-dev", "--expose", "8080:80")
	p.WaitFor("Previewing", 60*time.Second)
	eventuallyFromPod(t, "http://web-dev/", "echo from laptop-preview")
	eventuallyFromPod(t, "http://web-dev."+testNamespace+".svc.cluster.local/", "echo from laptop-preview")
	if r := kt(t, "-n", testNamespace, "preview", "web", "--expose", "8080:80"); r.Code != 1 || !strings.Contains(r.Stderr, "already exists") {
		t.Errorf("preview over an existing Service:\n%s", r)
	}
	if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(p.Output(), "Removed preview service") {
		t.Errorf("preview exit %d:\n%s", code, p.Output())
	}
}

func TestForward(t *testing.T) {
	nothingLeftBehind(t)
	t.Run("to a Service, following pod restarts", func(t *testing.T) {
		p := startKt(t, "-n", testNamespace, "forward", "svc/web", "18180:80")
		p.WaitFor("Forwarding", 30*time.Second)
		if r := laptop(t, "curl", "-sS", "-m", "10", "http://127.0.0.1:18180/fwd"); !strings.Contains(r.Stdout, "echo from web-") {
			t.Fatalf("forward to svc/web:\n%s", r)
		}
		kubectl(t, "-n", testNamespace, "delete", "pod", "-l", "app=web", "--wait=false")
		eventually(t, 60*time.Second, "forward follows the new pod", func() error {
			r := laptop(t, "curl", "-sS", "-m", "3", "http://127.0.0.1:18180/after-restart")
			if !strings.Contains(r.Stdout, "echo from web-") {
				return fmt.Errorf("%s", r.Stderr)
			}
			return nil
		})
		p.Stop(syscall.SIGINT, 20*time.Second)
	})
	t.Run("to a Deployment and to a pod", func(t *testing.T) {
		podName, _ := webPod(t)
		// deploy/web without a port: the only TCP port its pods declare (8080), locally too
		// (free in the laptop netns); pod/NAME with a local port and the container port's name.
		for _, args := range [][]string{{"deploy/web"}, {"pod/" + podName, "18183:http"}} {
			p := startKt(t, append([]string{"-n", testNamespace, "forward"}, args...)...)
			p.WaitFor("Forwarding", 30*time.Second)
			url := "http://127.0.0.1:8080/deploy"
			if len(args) == 2 {
				url = "http://127.0.0.1:18183/pod"
			}
			if r := laptop(t, "curl", "-sS", "-m", "10", url); !strings.Contains(r.Stdout, "echo from web-") {
				t.Errorf("forward %s:\n%s\n%s", args, r, p.Output())
			}
			p.Stop(syscall.SIGINT, 20*time.Second)
		}
	})
	t.Run("several ports to one pod", func(t *testing.T) {
		p := startKt(t, "-n", testNamespace, "forward", "deploy/multi", "18184:main", "18185:8081")
		p.WaitFor("Ctrl-C to stop", 30*time.Second)
		var pods []string
		for local, remote := range map[string]string{"18184": "8080", "18185": "8081"} {
			r := laptop(t, "curl", "-sS", "-m", "10", "http://127.0.0.1:"+local+"/port")
			_, pod, ok := strings.Cut(strings.TrimSpace(r.Stdout), "port "+remote+" of ")
			if !ok {
				t.Errorf("local port %s: want port %s of a multi pod:\n%s\n%s", local, remote, r, p.Output())
			}
			pods = append(pods, pod)
		}
		if len(pods) == 2 && pods[0] != pods[1] {
			t.Errorf("the two ports went to two pods: %v", pods)
		}
		p.Stop(syscall.SIGINT, 20*time.Second)
	})
	t.Run("to host:port through a shadow", func(t *testing.T) {
		p := startKt(t, "-n", testNamespace, "forward", "web."+testNamespace+".svc.cluster.local:80", "18181")
		p.WaitFor("Forwarding", 60*time.Second)
		if r := laptop(t, "curl", "-sS", "-m", "10", "http://127.0.0.1:18181/hostport"); !strings.Contains(r.Stdout, "echo from web-") {
			t.Errorf("forward to host:port:\n%s", r)
		}
		p.Stop(syscall.SIGINT, 30*time.Second)
	})
	if r := kt(t, "-n", testNamespace, "forward", "svc/web", "abc:80"); r.Code != 2 {
		t.Errorf("bad local port: %s", r)
	}
	// web's ports are 80/TCP and 9090/UDP: forward carries TCP, and says so.
	if r := kt(t, "-n", testNamespace, "forward", "svc/web", "9090"); r.Code != 1 || !strings.Contains(r.Stderr, "port 9090 is UDP; forward carries TCP only") {
		t.Errorf("forward to a UDP port:\n%s", r)
	}
	if r := kt(t, "-n", testNamespace, "forward", "svc/web", "8080"); r.Code != 1 || !strings.Contains(r.Stderr, "its ports: http 80/TCP, udp 9090/UDP") {
		t.Errorf("forward to a port the Service does not have:\n%s", r)
	}
	if r := kt(t, "-n", testNamespace, "forward", "svc/web", "18186:80", "18186:80"); r.Code != 2 || !strings.Contains(r.Stderr, "local port 18186 is given twice") {
		t.Errorf("a local port twice:\n%s", r)
	}
	if r := kt(t, "-n", testNamespace, "forward", "job/web", "80"); r.Code != 1 || !strings.Contains(r.Stderr, "forward takes svc/NAME, deploy/NAME, sts/NAME, pod/NAME") {
		t.Errorf("forward to a kind it does not take:\n%s", r)
	}
}

// TestPreviewReplacesADeletedShadow: the preview Service belongs to its shadow pod, so both
// go when the pod is deleted; preview starts a new shadow and gives the Service back.
func TestPreviewReplacesADeletedShadow(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-lost", "127.0.0.1:8080")
	p := startKt(t, "-n", testNamespace, "preview", "web-lost", "--expose", "8080:80")
	p.WaitFor("Previewing", 60*time.Second)
	old := deleteShadow(t, wire.RolePreview)
	p.WaitFor("took over", 60*time.Second)
	if now := shadowPod(t, wire.RolePreview); now.Name == old {
		t.Errorf("the shadow was not replaced: %s", old)
	}
	eventually(t, 40*time.Second, "the preview answering by its DNS name again", func() error {
		if got := withHeader(t, "", "http://web-lost."+testNamespace+"/again"); !strings.Contains(got, "echo from laptop-lost") {
			return fmt.Errorf("request: %q", got)
		}
		return nil
	})
	if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(p.Output(), "Removed preview service") {
		t.Errorf("preview exit %d:\n%s", code, p.Output())
	}
}

// TestMeshReplacesADeletedShadow: mesh starts a new shadow when its shadow pod is deleted;
// in auto mode the router is pointed at it, in manual mode it carries the same labels.
func TestMeshReplacesADeletedShadow(t *testing.T) {
	nothingLeftBehind(t)
	scale(t, "deploy", "web", 1)
	laptopServer(t, "laptop-phoenix", "127.0.0.1:8080")
	t.Run("auto", func(t *testing.T) {
		p := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:phoenix")
		old := deleteShadow(t, wire.RoleMesh)
		p.WaitFor("took over", 60*time.Second)
		eventually(t, 20*time.Second, "marked requests reaching the laptop through the new shadow", func() error {
			if got := withHeader(t, "version: phoenix", "http://web/again"); !strings.Contains(got, "echo from laptop-phoenix") {
				return fmt.Errorf("marked request: %q", got)
			}
			return nil
		})
		if got := withHeader(t, "", "http://web/unmarked"); !strings.Contains(got, "echo from web-") {
			t.Errorf("unmarked request: %q", got)
		}
		if now := shadowPod(t, wire.RoleMesh); now.Name == old {
			t.Errorf("the shadow was not replaced: %s", old)
		}
		if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
			t.Errorf("mesh exit %d:\n%s", code, p.Output())
		}
	})
	t.Run("manual", func(t *testing.T) {
		p := startKt(t, "-n", testNamespace, "mesh", "web", "--expose", "8080:80", "--mode", "manual", "--version-mark", "version:phoenix")
		p.WaitFor("Ctrl-C to stop", 60*time.Second)
		old := deleteShadow(t, wire.RoleMesh)
		p.WaitFor("took over", 60*time.Second)
		now := shadowPod(t, wire.RoleMesh)
		if now.Name == old || now.Labels["version"] != "phoenix" || now.Labels["app"] != "web" {
			t.Fatalf("replacement shadow %s labels %v (old %s)", now.Name, now.Labels, old)
		}
		eventually(t, 20*time.Second, "the new shadow forwarding to the laptop", func() error {
			if got := withHeader(t, "", "http://"+now.Status.PodIP+":8080/direct"); !strings.Contains(got, "echo from laptop-phoenix") {
				return fmt.Errorf("request to the new shadow: %q", got)
			}
			return nil
		})
		if code := p.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
			t.Errorf("mesh exit %d:\n%s", code, p.Output())
		}
	})
}

// shadowPod returns the one running shadow pod of role in the test namespace.
func shadowPod(t *testing.T, role string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	eventually(t, 30*time.Second, "one running "+role+" shadow", func() error {
		pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=" + role})
		if err != nil {
			return err
		}
		var running []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running = append(running, p)
			}
		}
		if len(running) != 1 {
			return fmt.Errorf("%d running", len(running))
		}
		pod = running[0]
		return nil
	})
	return pod
}

// deleteShadow deletes the one shadow pod of role, as a user or an eviction would, and
// returns its name.
func deleteShadow(t *testing.T, role string) string {
	t.Helper()
	p := shadowPod(t, role)
	kubectl(t, "-n", testNamespace, "delete", "pod", p.Name, "--wait=false")
	return p.Name
}
