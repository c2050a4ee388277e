//go:build e2e

// Package e2e drives the built kubectl-kt binary against the real local test cluster
// (hack/cluster), with the client in the "laptop" network namespace that reaches only the
// API server, and real clients (curl, wget, nslookup) on both sides.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	ktRoot         = "/var/tmp/ktcluster"
	hostKubeconfig = ktRoot + "/kubeconfig"
	laptopNetns    = "ktlaptop"
	laptopKubecfg  = ktRoot + "/kubeconfig-laptop"
	// apiServerFromLaptop is the host end of the laptop's veth, where the laptop reaches the
	// API server (hack/cluster).
	apiServerFromLaptop = "10.243.1.1"
	testNamespace       = "kt-e2e"
	clientPodName       = "client"
	laptopEtcNetns      = "/etc/netns/" + laptopNetns
	defaultWaitTime     = 60 * time.Second
)

var (
	ktBin      string
	testapp    string
	restConfig *rest.Config
	client     kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// In CI an e2e test may never be skipped: a missing prerequisite fails the run there.
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", a...)
		if os.Getenv("CI") == "true" || os.Getenv("KT_E2E_REQUIRED") == "1" {
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipping every e2e test (set KT_E2E_REQUIRED=1 to fail instead)")
		return 0
	}
	if os.Geteuid() != 0 {
		return fatal("needs root (network namespaces, TUN devices)")
	}
	ktBin = os.Getenv("KT_BIN")
	if ktBin == "" {
		return fatal("KT_BIN is not set; run `make test-e2e`")
	}
	testapp = envOr("KT_TESTAPP", "localhost/kt/testapp:e2e")
	var err error
	restConfig, err = clientcmd.BuildConfigFromFlags("", hostKubeconfig)
	if err != nil {
		return fatal("no test cluster (%v); run `make cluster-up`", err)
	}
	restConfig.QPS, restConfig.Burst = 50, 100
	client = kubernetes.NewForConfigOrDie(restConfig)
	if _, err := client.Discovery().ServerVersion(); err != nil {
		return fatal("test cluster unreachable (%v); run `make cluster-up`", err)
	}
	if _, err := os.Stat("/run/netns/" + laptopNetns); err != nil {
		return fatal("laptop netns %s missing; run `make cluster-up`", laptopNetns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := setupFixtures(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: fixtures: %v\n", err)
		return 1
	}
	return m.Run()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// result of a finished command.
type result struct {
	Stdout, Stderr string
	Code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// runCmd runs a command to completion with a timeout.
func runCmd(t testing.TB, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %v: %v", name, args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v timed out after %s\n%s", name, args, timeout, r)
	}
	return r
}

// laptop runs a command in the laptop netns.
func laptop(t testing.TB, args ...string) result {
	t.Helper()
	return runCmd(t, 2*time.Minute, "ip", append([]string{"netns", "exec", laptopNetns}, args...)...)
}

// ktArgs prefixes kubectl-kt's arguments with the laptop kubeconfig.
func ktArgs(args ...string) []string {
	return append([]string{"netns", "exec", laptopNetns, ktBin, "--kubeconfig", laptopKubecfg}, args...)
}

// kt runs kubectl-kt to completion in the laptop netns.
func kt(t testing.TB, args ...string) result {
	t.Helper()
	return runCmd(t, 2*time.Minute, "ip", ktArgs(args...)...)
}

// kubectl runs kubectl against the cluster from the host.
func kubectl(t testing.TB, args ...string) result {
	t.Helper()
	return runCmd(t, 2*time.Minute, "kubectl", append([]string{"--kubeconfig", hostKubeconfig}, args...)...)
}

// inCluster runs a shell command in the client pod, as a process inside the cluster would.
func inCluster(t testing.TB, script string) result {
	t.Helper()
	return kubectl(t, "exec", "-n", testNamespace, clientPodName, "--", "sh", "-c", script)
}

// proc is a kubectl-kt running in the background.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
	err    error
	logDir string
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startKt starts kubectl-kt in the laptop netns. Its output is attached to the test when the
// test fails, and it is stopped (SIGINT, then SIGKILL) at cleanup if still running.
func startKt(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProc(t, "ip", ktArgs(args...)...)
}

func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout = lockedWriter{&p.mu, &p.out}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.out}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.Stop(syscall.SIGINT, 30*time.Second)
		}
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", name, strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// Output returns everything the process printed so far.
func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitFor waits until the output contains s.
func (p *proc) WaitFor(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), s) {
			return
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), s) {
				return
			}
			p.t.Fatalf("kubectl-kt exited (%v) before printing %q:\n%s", p.err, s, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.t.Fatalf("kubectl-kt did not print %q within %s:\n%s", s, timeout, p.Output())
}

// Stop sends sig and waits for the exit; SIGKILL after timeout. It returns the exit code.
func (p *proc) Stop(sig syscall.Signal, timeout time.Duration) int {
	p.t.Helper()
	// The process is `ip netns exec … kubectl-kt`; ip execs, so the pid is kubectl-kt's.
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Errorf("kubectl-kt did not exit %s after %v; killing it", timeout, sig)
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL, as a crash would, and waits.
func (p *proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var metavGet = metav1.GetOptions{}

// pauseKubeProxy stops the test cluster's kube-proxy (SIGSTOP) for d, as a busy node's lags
// behind endpoint changes; it resumes it after d, and at the latest when the test ends.
func pauseKubeProxy(t testing.TB, d time.Duration) {
	t.Helper()
	b, err := os.ReadFile(ktRoot + "/run/kube-proxy.pid")
	if err != nil {
		t.Fatalf("kube-proxy's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("kube-proxy's pid: %v", err)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "kube-proxy" {
		t.Fatalf("pid %d is not kube-proxy (%q)", pid, comm)
	}
	var once sync.Once
	resume := func() { once.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("pause kube-proxy: %v", err)
	}
	time.AfterFunc(d, resume)
}
