// Package run implements `kubectl kt run`: a local process with a workload's environment,
// its mounted files, the cluster's network and, if asked, its traffic, all undone when the
// process exits.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-kt/kt/pkg/cluster"
	connectcmd "github.com/kubectl-kt/kt/pkg/cmd/connect"
	exchangecmd "github.com/kubectl-kt/kt/pkg/cmd/exchange"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	meshcmd "github.com/kubectl-kt/kt/pkg/cmd/mesh"
	mirrorcmd "github.com/kubectl-kt/kt/pkg/cmd/mirror"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/envvars"
	"github.com/kubectl-kt/kt/pkg/exchange"
	"github.com/kubectl-kt/kt/pkg/forward"
	"github.com/kubectl-kt/kt/pkg/mesh"
	"github.com/kubectl-kt/kt/pkg/mount"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/target"
)

// Options holds the flags and the command of run.
type Options struct {
	Target      string
	Container   string
	Command     []string // CMD [ARGS…], after --
	EnvOverride []string // K=V
	MountRoot   string
	NoMount     bool
	Token       bool // --with-service-account-token
	DisableTUN  bool
	Exchange    bool
	Mesh        string // KEY:VALUE
	Mirror      bool
	VersionMark string // with --mirror: KEY:VALUE
	PathPrefix  string // with --mirror
	Expose      string
	Pod         *cluster.PodOptions
	// RefreshInterval is how often the files are brought up to date.
	RefreshInterval time.Duration

	namespace string
	server    string
	client    kubernetes.Interface
	connect   *connectcmd.Options
	exchange  *exchangecmd.Options
	mesh      *meshcmd.Options
	mirror    *mirrorcmd.Options

	// Seams for unit tests: whether a connect already runs, and the sessions.
	running       func(server string) (*connect.State, bool)
	connectConfig func() connect.Config
	runConnect    func(context.Context, connect.Config) error
	runExchange   func(context.Context, exchange.Config) error
	runMesh       func(context.Context, mesh.Config) error
	stateDir      string

	genericiooptions.IOStreams
}

// NewOptions returns the defaults.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	o := &Options{Pod: cluster.NewPodOptions(), RefreshInterval: 2 * time.Second, IOStreams: streams,
		running: connect.Running, runConnect: connect.Run, runExchange: exchange.Run, runMesh: mesh.Run, stateDir: connect.StateDir()}
	o.connectConfig = func() connect.Config { return o.connect.Config() }
	return o
}

// NewCmdRun returns the run command.
func NewCmdRun(f genericclioptions.RESTClientGetter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOptions(streams)
	cmd := &cobra.Command{
		Use:   "run (svc/NAME | deploy/NAME | sts/NAME | pod/NAME | NAME) [flags] -- CMD [ARGS…]",
		Short: "Run a local process as if it were the workload: its environment, files, network and (if asked) traffic",
		Long: `Run starts CMD with the environment of the workload's container (as 'kubectl kt env' gives it, over
your own; --env-override wins), its ConfigMap, Secret, downward-API and projected volumes as
read-only files under $KT_MOUNT_ROOT at their mount paths (kept current while it runs), and the
cluster's network: a running 'kubectl kt connect' is used, else one is brought up for the life
of the process (--disable-tun: a SOCKS5 proxy in ALL_PROXY, HTTP_PROXY and HTTPS_PROXY, which
only programs that honour them use). --exchange or --mesh KEY:VALUE with --expose also send the
Service's traffic to the process, once it listens; --mirror sends it a copy of every request,
which the original pods still answer (its answers are dropped). The process keeps the
terminal; signals kt gets go to it. When it exits, kt restores the traffic, removes what it
added and exits with the process's status.`,
		Example: `  kubectl kt run deploy/api -- go run ./cmd/api
  kubectl kt run svc/web --exchange --expose 8080:80 -- ./web --port 8080
  kubectl kt run web --mesh version:dev1 --expose 8080:80 -- npm start
  kubectl kt run web --mirror --expose 8080:80 --path-prefix /api/ -- ./web --port 8080
  kubectl kt run deploy/api --disable-tun -- curl -s http://orders/health`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, cmd, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return usage.Wrap(err)
			}
			cmd.SilenceUsage = true
			return o.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Container, "container", "c", "", "Container of the pod (default: the one kubectl.kubernetes.io/default-container names, else the first).")
	fs.StringArrayVarP(&o.EnvOverride, "env-override", "e", nil, "K=V: set a variable over the workload's and your own (repeatable).")
	fs.StringVar(&o.MountRoot, "mount-root", "", "Directory for the workload's files, new or empty (default: a new private temporary one); removed on exit.")
	fs.BoolVar(&o.NoMount, "no-mount", false, "Do not copy the workload's files.")
	fs.BoolVar(&o.Token, "with-service-account-token", false, "Copy projected service account tokens too (a credential: a token of the pod's service account, bound to the pod).")
	fs.BoolVar(&o.DisableTUN, "disable-tun", false, "No TUN device: give the process a SOCKS5 proxy through ALL_PROXY, HTTP_PROXY and HTTPS_PROXY (needs no root).")
	fs.BoolVar(&o.Exchange, "exchange", false, "Send all of the Service's in-cluster traffic to the process (as kubectl kt exchange; needs --expose).")
	fs.StringVar(&o.Mesh, "mesh", "", "KEY:VALUE: send requests with that header to the process (as kubectl kt mesh; needs --expose).")
	fs.BoolVar(&o.Mirror, "mirror", false, "Send a copy of each of the Service's requests to the process; the original pods still answer every one (as kubectl kt mirror; needs --expose).")
	fs.StringVar(&o.VersionMark, "version-mark", "", "With --mirror: KEY:VALUE, copy only requests with this header.")
	fs.StringVar(&o.PathPrefix, "path-prefix", "", "With --mirror: copy only requests whose path starts with this (e.g. /api/).")
	fs.StringVar(&o.Expose, "expose", "", "LOCAL:REMOTE[,…] or PORT: the process's ports that take the traffic of --exchange or --mesh, or the copies of --mirror.")
	kube.AddPodFlags(fs, o.Pod)
	kube.AddFallbackFlag(fs, o.Pod)
	return cmd
}

// Complete reads the target and the command after --, and builds the clients and the
// configuration of the sessions run brings up.
func (o *Options) Complete(f genericclioptions.RESTClientGetter, cmd *cobra.Command, args []string) error {
	if n := cmd.ArgsLenAtDash(); n >= 0 {
		o.Command = args[n:]
		args = args[:n]
	}
	if len(args) != 1 {
		return usage.Errorf("give one TARGET before --, then the command: kubectl kt run deploy/NAME -- CMD [ARGS…]")
	}
	o.Target = args[0]
	if len(o.Command) == 0 { // before anything is looked up
		return usage.Wrap(o.Validate())
	}
	ns, rc, client, err := kube.Clients(f)
	if err != nil {
		return err
	}
	o.namespace, o.server, o.client = ns, rc.Host, client
	o.Pod.CompleteFallback()
	o.connect = connectcmd.NewOptions(o.sessionStreams())
	o.connect.Pod, o.connect.DisableTUN = o.Pod, o.DisableTUN
	if o.DisableTUN {
		o.connect.ProxyPort = freePort()
	}
	if _, running := o.running(o.server); !running {
		if err := o.connect.Complete(f, cmd); err != nil {
			return err
		}
	}
	switch {
	case o.Exchange:
		o.exchange = exchangecmd.NewOptions(o.sessionStreams())
		o.exchange.Expose, o.exchange.Pod, o.exchange.SkipPortChecking = o.Expose, o.Pod, true
		return o.exchange.Complete(f, o.Target)
	case o.Mesh != "":
		o.mesh = meshcmd.NewOptions(o.sessionStreams())
		o.mesh.Expose, o.mesh.VersionMark, o.mesh.Pod, o.mesh.SkipPortChecking = o.Expose, o.Mesh, o.Pod, true
		return o.mesh.Complete(f, o.Target)
	case o.Mirror:
		o.mirror = mirrorcmd.NewOptions(o.sessionStreams())
		pod := *o.Pod // mirror sets its own fallback (none), connect keeps its own
		o.mirror.Expose, o.mirror.Pod, o.mirror.SkipPortChecking, o.mirror.PodProxy = o.Expose, &pod, true, true
		o.mirror.VersionMark, o.mirror.PathPrefix = o.VersionMark, o.PathPrefix
		return o.mirror.Complete(f, o.Target)
	}
	return nil
}

// Validate checks the command line; it changes nothing.
func (o *Options) Validate() error {
	if len(o.Command) == 0 {
		return fmt.Errorf("no command: put it after --, e.g. kubectl kt run %s -- go run .", o.Target)
	}
	kind, name, ok := strings.Cut(o.Target, "/")
	if !ok {
		kind, name = "svc", o.Target
	}
	switch kind {
	case "svc", "service", "deploy", "deployment", "sts", "statefulset", "pod":
	default:
		return fmt.Errorf("target %q: write svc/NAME, deploy/NAME, sts/NAME, pod/NAME or a Service NAME", o.Target)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("target %q: %q is not a name (%s)", o.Target, name, errs[0])
	}
	for _, kv := range o.EnvOverride {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--env-override %q: write NAME=VALUE", kv)
		}
	}
	traffic := 0
	for _, on := range []bool{o.Exchange, o.Mesh != "", o.Mirror} {
		if on {
			traffic++
		}
	}
	switch {
	case traffic > 1:
		return fmt.Errorf("--exchange, --mesh and --mirror: choose one")
	case traffic == 1 && o.Expose == "":
		return fmt.Errorf("--exchange, --mesh and --mirror need --expose LOCAL:REMOTE, the process's port that takes the traffic")
	case o.Expose != "" && traffic == 0:
		return fmt.Errorf("--expose needs --exchange (all of the Service's traffic), --mesh KEY:VALUE (only marked requests) or --mirror (a copy of each request)")
	case (o.VersionMark != "" || o.PathPrefix != "") && !o.Mirror:
		return fmt.Errorf("--version-mark and --path-prefix filter the copies of --mirror; for --mesh, give the mark as --mesh KEY:VALUE")
	case traffic == 1 && kind == "pod":
		return fmt.Errorf("--exchange, --mesh and --mirror take a Service, Deployment or StatefulSet, not a pod")
	}
	if o.NoMount && (o.MountRoot != "" || o.Token) {
		return fmt.Errorf("--no-mount copies no files: leave out --mount-root and --with-service-account-token")
	}
	if o.connect != nil {
		if err := o.connect.Validate(); err != nil {
			return err
		}
	}
	if o.exchange != nil {
		return o.exchange.Validate()
	}
	if o.mesh != nil {
		return o.mesh.Validate()
	}
	if o.mirror != nil {
		return o.mirror.Validate()
	}
	return o.Pod.Validate()
}

// sessionStreams are the streams of the sessions run brings up: their lines go to stderr,
// each prefixed, so they are told apart from the process's own output.
func (o *Options) sessionStreams() genericiooptions.IOStreams {
	w := &prefixWriter{w: o.ErrOut, prefix: "kt: "}
	return genericiooptions.IOStreams{In: o.In, Out: w, ErrOut: w}
}

// Run runs the command with the workload's environment, files and network until it exits.
func (o *Options) Run(ctx context.Context) (err error) {
	log := &prefixWriter{w: o.ErrOut, prefix: "kt: "}
	pod, err := forward.RunningPod(ctx, o.client, o.namespace, o.Target)
	if errors.Is(err, forward.ErrNotFound) {
		return usage.Wrap(err)
	}
	if err != nil {
		return err
	}
	c := envvars.FindContainer(pod, o.Container)
	if c == nil {
		return usage.Errorf("pod %s has no container %q; its containers: %s (choose one with -c)", pod.Name, o.Container, containerNames(pod))
	}
	vars, warnings, err := (&envvars.Resolver{Client: o.client}).Resolve(ctx, pod, c.Name)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(log, "warning: %s\n", w)
	}
	// The sessions and the files outlive ctx (the first Ctrl-C): they end once the process has.
	sctx := context.WithoutCancel(ctx)
	root, closeFiles, err := o.mountFiles(sctx, pod, c.Name, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeFiles(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w; run 'kubectl kt clean --local-only'", root, cerr))
		}
	}()
	proxy, endNet, err := o.startNetwork(ctx, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, endNet()) }()

	env := childEnv(os.Environ(), vars, root, proxy, o.EnvOverride)
	return o.runChild(ctx, env, log)
}

// mountFiles copies the container's files under a new mount root and keeps them current
// until close, which removes them.
func (o *Options) mountFiles(ctx context.Context, pod *corev1.Pod, container string, log io.Writer) (string, func() error, error) {
	if o.NoMount {
		return "", func() error { return nil }, nil
	}
	r := &mount.Resolver{Client: o.client, ServiceAccountToken: o.Token}
	ms, skipped, err := r.Resolve(ctx, pod, container)
	if err != nil {
		return "", nil, err
	}
	d, err := mount.Open(o.MountRoot, o.stateDir)
	if err != nil {
		return "", nil, err
	}
	if _, err := d.Write(ms); err != nil {
		d.Close()
		return "", nil, err
	}
	if len(skipped) > 0 {
		var s []string
		for _, sk := range skipped {
			s = append(s, sk.String())
		}
		fmt.Fprintf(log, "warning: not copied: %s\n", strings.Join(s, "; "))
	}
	fmt.Fprintf(log, "files of pod %s/%s container %s under %s (KT_MOUNT_ROOT): %d mounts\n", pod.Namespace, pod.Name, container, d.Root, len(ms))
	kctx, stop := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		d.Keep(kctx, r, pod, container, o.RefreshInterval, log)
	}()
	return d.Root, func() error {
		stop()
		<-kept
		return d.Close()
	}, nil
}

// startNetwork uses a running connect, or brings one up for the life of the process; with
// --disable-tun (or a running connect that has no TUN device) proxy is its SOCKS5 address.
func (o *Options) startNetwork(ctx context.Context, log io.Writer) (proxy string, end func() error, err error) {
	if st, ok := o.running(o.server); ok {
		what := "its TUN device"
		if st.Proxy != "" {
			proxy, what = st.Proxy, "its SOCKS5 proxy "+st.Proxy
		}
		fmt.Fprintf(log, "using the kubectl kt connect already running (pid %d) and %s\n", st.PID, what)
		return proxy, func() error { return nil }, nil
	}
	cfg := o.connectConfig()
	done := make(chan error, 1)
	ready := make(chan struct{})
	cfg.Ready = func() { close(ready) }
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	go func() { done <- o.runConnect(sctx, cfg) }()
	end = func() error {
		stop()
		return <-done
	}
	select {
	case <-ready:
	case err := <-done:
		stop()
		if err == nil {
			err = errors.New("connect ended before it was up")
		}
		return "", nil, err
	case <-ctx.Done(): // Ctrl-C before the process started
		return "", nil, errors.Join(&usage.ExitStatus{Code: 130}, end())
	}
	if cfg.DisableTUN {
		proxy = net.JoinHostPort(cfg.ProxyAddr, strconv.Itoa(cfg.ProxyPort))
	}
	return proxy, end, nil
}

// runChild runs the command, then, once it listens, the traffic session; it passes the
// signals kt gets on to it and returns its exit status.
func (o *Options) runChild(ctx context.Context, env []string, log io.Writer) error {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	cmd := exec.Command(o.Command[0], o.Command[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, o.In, o.Out, o.ErrOut
	if f, ok := o.In.(*os.File); !ok || f == nil {
		cmd.Stdin = nil
	}
	ch, err := startChild(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", o.Command[0], err)
	}
	exited := make(chan struct{})
	var code int
	var werr error
	go func() {
		code, werr = ch.wait()
		close(exited)
	}()
	endTraffic := o.startTraffic(ctx, exited, log)
	for {
		select {
		case s := <-sig:
			ch.signal(s)
			continue
		case <-exited:
		}
		break
	}
	terr := endTraffic()
	if werr != nil {
		return errors.Join(werr, terr)
	}
	if terr != nil {
		return errors.Join(&usage.ExitStatus{Code: code}, terr)
	}
	if code != 0 {
		return &usage.ExitStatus{Code: code}
	}
	return nil
}

// startTraffic waits in the background until the process listens on its --expose ports,
// then exchanges, meshes or mirrors the Service until end is called. A session that fails is said,
// and the process runs on.
func (o *Options) startTraffic(ctx context.Context, exited <-chan struct{}, log io.Writer) (end func() error) {
	if o.exchange == nil && o.mesh == nil && o.mirror == nil {
		return func() error { return nil }
	}
	var ports []int
	if expose, err := target.ParseExpose(o.Expose); err == nil {
		for _, e := range expose {
			ports = append(ports, e.Local)
		}
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() {
		if !waitListening(sctx, exited, ports, log) {
			done <- nil
			return
		}
		var err error
		switch {
		case o.exchange != nil:
			err = o.runExchange(sctx, o.exchange.Config())
		case o.mesh != nil:
			err = o.runMesh(sctx, o.mesh.Config())
		default:
			err = o.runMesh(sctx, o.mirror.Config()) // a mirror is a member of the mesh
		}
		if err != nil && sctx.Err() == nil {
			fmt.Fprintf(log, "error: the traffic session ended: %v; the process runs on without it\n", err)
		}
		done <- err
	}()
	return func() error {
		stop()
		return <-done
	}
}

// waitListening waits until something listens on every port, and says so while it waits;
// false if the process exited or ctx ended first.
func waitListening(ctx context.Context, exited <-chan struct{}, ports []int, log io.Writer) bool {
	said := false
	for {
		if session.CheckLocal(ports...) == nil {
			return true
		}
		if !said {
			fmt.Fprintf(log, "waiting for the process to listen on %s before taking the traffic\n", joinInts(ports))
			said = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-exited:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// childEnv is the process's environment: the user's, then the workload's, then the overrides;
// with the mount root and the SOCKS5 proxy, when there are.
func childEnv(own []string, vars []envvars.Var, root, proxy string, overrides []string) []string {
	var order []string
	val := map[string]string{}
	set := func(k, v string) {
		if _, ok := val[k]; !ok {
			order = append(order, k)
		}
		val[k] = v
	}
	for _, kv := range own {
		if k, v, ok := strings.Cut(kv, "="); ok {
			set(k, v)
		}
	}
	for _, v := range vars {
		set(v.Name, v.Value)
	}
	if root != "" {
		set("KT_MOUNT_ROOT", root)
	}
	if proxy != "" {
		u := "socks5h://" + proxy
		for _, k := range []string{"ALL_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "http_proxy", "https_proxy"} {
			set(k, u)
		}
	}
	for _, kv := range overrides {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+val[k])
	}
	return env
}

func containerNames(pod *corev1.Pod) string {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

func joinInts(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ", ")
}

// freePort is a loopback port nothing listens on now, for run's own SOCKS5 proxy.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 2223
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// prefixWriter writes each line with a prefix: kt's lines beside the process's output.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool // within a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		if !p.mid {
			if _, err := io.WriteString(p.w, p.prefix); err != nil {
				return 0, err
			}
		}
		line := b
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			line = b[:i+1]
		}
		if _, err := p.w.Write(line); err != nil {
			return 0, err
		}
		p.mid = line[len(line)-1] != '\n'
		b = b[len(line):]
	}
	return n, nil
}
