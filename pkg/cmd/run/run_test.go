package run

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	exchangecmd "github.com/kubectl-kt/kt/pkg/cmd/exchange"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/envvars"
	"github.com/kubectl-kt/kt/pkg/exchange"
	"github.com/kubectl-kt/kt/pkg/mesh"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(o *Options)
		want string // "" valid
	}{
		{"a deployment and a command", func(o *Options) {}, ""},
		{"a pod", func(o *Options) { o.Target = "pod/web-1" }, ""},
		{"a Service by name", func(o *Options) { o.Target = "web" }, ""},
		{"no command", func(o *Options) { o.Command = nil }, "put it after --"},
		{"an unknown kind", func(o *Options) { o.Target = "job/x" }, "write svc/NAME"},
		{"a bad name", func(o *Options) { o.Target = "deploy/Web_1" }, "is not a name"},
		{"an override without =", func(o *Options) { o.EnvOverride = []string{"LEVEL"} }, "NAME=VALUE"},
		{"an override", func(o *Options) { o.EnvOverride = []string{"LEVEL=debug", "EMPTY="} }, ""},
		{"exchange without --expose", func(o *Options) { o.Exchange = true }, "need --expose"},
		{"--expose without a traffic mode", func(o *Options) { o.Expose = "8080:80" }, "--expose needs --exchange"},
		{"exchange and mesh", func(o *Options) { o.Exchange, o.Mesh, o.Expose = true, "v:1", "8080" }, "choose one"},
		{"mesh and mirror", func(o *Options) { o.Mirror, o.Mesh, o.Expose = true, "v:1", "8080" }, "choose one"},
		{"mirror without --expose", func(o *Options) { o.Mirror = true }, "need --expose"},
		{"mirror of a pod", func(o *Options) { o.Mirror, o.Expose, o.Target = true, "8080", "pod/web-1" }, "not a pod"},
		{"mirror", func(o *Options) { o.Mirror, o.Expose = true, "8080:80" }, ""},
		{"a path prefix without --mirror", func(o *Options) { o.Mesh, o.Expose, o.PathPrefix = "v:1", "8080", "/api/" }, "filter the copies of --mirror"},
		{"a mark without --mirror", func(o *Options) { o.VersionMark = "tenant:acme" }, "filter the copies of --mirror"},
		{"exchange of a pod", func(o *Options) { o.Exchange, o.Expose, o.Target = true, "8080", "pod/web-1" }, "not a pod"},
		{"--no-mount with --mount-root", func(o *Options) { o.NoMount, o.MountRoot = true, "/tmp/x" }, "--no-mount"},
		{"an empty image", func(o *Options) { o.Pod.Image = "" }, "--image"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Target, o.Command = "deploy/web", []string{"go", "run", "."}
		tc.set(o)
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestChildEnv(t *testing.T) {
	env := childEnv([]string{"PATH=/bin", "LEVEL=mine", "HOME=/home/me"},
		[]envvars.Var{{Name: "LEVEL", Value: "pod"}, {Name: "DB", Value: "db:5432"}},
		"/tmp/kt-mount-1", "127.0.0.1:4000", []string{"DB=localhost:5432", "NEW=x=y"})
	want := []string{"PATH=/bin", "LEVEL=pod", "HOME=/home/me", "DB=localhost:5432", "KT_MOUNT_ROOT=/tmp/kt-mount-1",
		"ALL_PROXY=socks5h://127.0.0.1:4000", "HTTP_PROXY=socks5h://127.0.0.1:4000", "HTTPS_PROXY=socks5h://127.0.0.1:4000",
		"all_proxy=socks5h://127.0.0.1:4000", "http_proxy=socks5h://127.0.0.1:4000", "https_proxy=socks5h://127.0.0.1:4000", "NEW=x=y"}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Errorf("env:\n%s\nwant:\n%s", strings.Join(env, "\n"), strings.Join(want, "\n"))
	}
	if env := childEnv(nil, nil, "", "", nil); len(env) != 0 {
		t.Errorf("nothing to add: %v", env)
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	w := &prefixWriter{w: &b, prefix: "kt: "}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\n\nthree\n"))
	if b.String() != "kt: one\nkt: two\nkt: \nkt: three\n" {
		t.Errorf("%q", b.String())
	}
}

func runPod() (*corev1.Pod, *corev1.ConfigMap) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Env: []corev1.EnvVar{{Name: "LEVEL", Value: "info"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config"}}}},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config", Namespace: "ns"}, Data: map[string]string{"app.yaml": "port: 8080"}}
	return pod, cm
}

// TestRunWithARunningConnect runs a real process with the pod's environment and files over
// a connect that already runs (so none is started): its output, its exit status as kt's,
// and the files gone afterwards.
func TestRunWithARunningConnect(t *testing.T) {
	pod, cm := runPod()
	var out, errOut syncBuffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &errOut})
	o.Target, o.namespace, o.client, o.stateDir = "pod/web-1", "ns", fake.NewClientset(pod, cm), t.TempDir()
	o.running = func(string) (*connect.State, bool) { return &connect.State{PID: 42, Proxy: "127.0.0.1:4000"}, true }
	o.runConnect = func(context.Context, connect.Config) error { t.Error("a second connect was started"); return nil }
	o.MountRoot = filepath.Join(t.TempDir(), "files")
	o.Command = []string{"sh", "-c", `echo "$LEVEL $ALL_PROXY $(cat $KT_MOUNT_ROOT/etc/config/app.yaml)"; exit 7`}
	err := o.Run(context.Background())
	var st *usage.ExitStatus
	if !errors.As(err, &st) || st.Code != 7 {
		t.Fatalf("exit: %v, want status 7\n%s", err, errOut.String())
	}
	if out.String() != "info socks5h://127.0.0.1:4000 port: 8080\n" {
		t.Errorf("the process printed %q", out.String())
	}
	if !strings.Contains(errOut.String(), "kt: using the kubectl kt connect already running (pid 42)") {
		t.Errorf("kt said:\n%s", errOut.String())
	}
	if _, err := os.Stat(o.MountRoot); err == nil {
		t.Error("the mount root is left")
	}
}

// TestRunBringsUpConnect: without a running connect, one is brought up before the process
// starts and ended after it exits; a signal to kt goes to the process (exit 128+15).
func TestRunBringsUpConnect(t *testing.T) {
	pod, cm := runPod()
	var out, errOut syncBuffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &errOut})
	o.Target, o.namespace, o.client, o.stateDir, o.NoMount = "pod/web-1", "ns", fake.NewClientset(pod, cm), t.TempDir(), true
	o.running = func(string) (*connect.State, bool) { return nil, false }
	o.connect = nil
	var up, down bool
	o.runConnect = func(ctx context.Context, cfg connect.Config) error {
		up = true
		cfg.Ready()
		<-ctx.Done()
		down = true
		return nil
	}
	o.connectConfig = func() connect.Config { return connect.Config{} }
	o.Command = []string{"sh", "-c", `kill -TERM $PPID; sleep 5`}
	err := o.Run(context.Background())
	var st *usage.ExitStatus
	if !errors.As(err, &st) || st.Code != 128+15 {
		t.Fatalf("exit: %v, want 143 (SIGTERM passed on)\n%s", err, errOut.String())
	}
	if !up || !down {
		t.Errorf("connect up %v, down %v", up, down)
	}
}

// TestRunTraffic: the exchange starts only once something listens on the --expose port, and
// ends (its restore done) before kt returns; a process that never listens never takes the
// traffic.
func TestRunTraffic(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		expose    string
		exchanged bool
	}{{port + ":80", true}, {"1:80", false}} {
		pod, cm := runPod()
		var errOut syncBuffer
		o := NewOptions(genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &errOut})
		o.Target, o.namespace, o.client, o.stateDir, o.NoMount = "pod/web-1", "ns", fake.NewClientset(pod, cm), t.TempDir(), true
		o.running = func(string) (*connect.State, bool) { return &connect.State{PID: 1}, true }
		o.Exchange, o.Expose, o.exchange = true, tc.expose, exchangecmd.NewOptions(genericiooptions.IOStreams{})
		exchanged, restored := false, false
		o.runExchange = func(ctx context.Context, cfg exchange.Config) error {
			exchanged = true
			<-ctx.Done()
			restored = true
			return nil
		}
		o.Command = []string{"sleep", "0.5"}
		if err := o.Run(context.Background()); err != nil {
			t.Fatalf("%s: %v\n%s", tc.expose, err, errOut.String())
		}
		if exchanged != tc.exchanged || restored != tc.exchanged {
			t.Errorf("--expose %s: exchanged %v, restored %v\n%s", tc.expose, exchanged, restored, errOut.String())
		}
		if !tc.exchanged && !strings.Contains(errOut.String(), "waiting for the process to listen on 1") {
			t.Errorf("kt did not say it waits:\n%s", errOut.String())
		}
	}
}

// TestRunMirror: --mirror runs a mirror, a member of the mesh that gets copies, once the
// process listens: no fallback (a copy must never reach the original pods), through the pod
// proxy, while connect's shadow keeps its own fallback.
func TestRunMirror(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	kubeconfig := filepath.Join(t.TempDir(), "config")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns}}]
current-context: x
`), 0o600)
	f := genericclioptions.NewConfigFlags(false)
	f.KubeConfig = &kubeconfig
	var errOut syncBuffer
	o := NewOptions(genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &errOut})
	o.running = func(string) (*connect.State, bool) { return &connect.State{PID: 1}, true }
	o.Pod.FallbackAfter = 10 * time.Second // the flag's default, which NewCmdRun's own options get
	cmd := NewCmdRun(f, o.IOStreams)
	if err := cmd.Flags().Parse([]string{"svc/web", "--", "sleep", "0.5"}); err != nil {
		t.Fatal(err)
	}
	o.Mirror, o.Expose, o.NoMount, o.VersionMark, o.PathPrefix = true, port+":80", true, "Tenant:acme", "/api/"
	if err := o.Complete(f, cmd, cmd.Flags().Args()); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	pod, cm := runPod()
	o.client = fake.NewClientset(pod, cm, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}})
	o.stateDir = t.TempDir()
	var got *mesh.Config
	o.runMesh = func(ctx context.Context, cfg mesh.Config) error {
		got = &cfg
		<-ctx.Done()
		return nil
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	switch {
	case got == nil:
		t.Fatalf("no mirror ran:\n%s", errOut.String())
	case !got.Mirror || got.Target != "svc/web" || got.Key != "tenant" || got.Value != "acme" || got.PathPrefix != "/api/" || !got.PodProxy || len(got.Expose) != 1 || strconv.Itoa(got.Expose[0].Local) != port:
		t.Errorf("the mirror's configuration: %+v", got)
	case got.Pod.FallbackAfter != 0:
		t.Errorf("a mirror with a fallback of %v: copies would reach the original pods", got.Pod.FallbackAfter)
	case o.Pod.FallbackAfter == 0:
		t.Error("the mirror took away connect's fallback")
	}
}

// syncBuffer is a buffer that kt's lines and the process's output (copied by os/exec) may
// write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
