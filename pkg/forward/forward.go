// Package forward forwards a local port to a Service (through a pod behind it, following pod
// restarts) or to any host:port the cluster can reach (through a shadow). It needs no root.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/tunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Config configures Run.
type Config struct {
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	Namespace  string
	Target     string // svc/NAME, NAME (a Service), deploy/NAME, sts/NAME, pod/NAME, or HOST:PORT
	Ports      []Port // at least one; one for HOST:PORT
	Address    string // local listen address
	Pod        *cluster.PodOptions
	Command    string
	ErrOut     io.Writer
}

// Port is one [LOCAL:]REMOTE.
type Port struct {
	Local  int    // 0: the remote port
	Remote string // the Service's or the pods' port (number or name); empty: the only one; for HOST:PORT, unused
}

// IsAddress reports whether target is HOST:PORT rather than KIND/NAME or a Service NAME.
func IsAddress(target string) bool {
	if strings.Contains(target, "/") {
		return false
	}
	_, port, err := net.SplitHostPort(target)
	return err == nil && port != ""
}

// Run forwards until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	pipe.OneProcessor()
	if IsAddress(cfg.Target) {
		return runAddress(ctx, cfg)
	}
	return runPods(ctx, cfg)
}

func listen(cfg Config, port int) (net.Listener, error) {
	addr := net.JoinHostPort(cfg.Address, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; choose another local port", addr, err)
	}
	return l, nil
}

func serve(ctx context.Context, l net.Listener, dial func(context.Context) (net.Conn, error), errOut io.Writer) {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := dial(ctx)
			if err != nil {
				fmt.Fprintf(errOut, "warning: %v\n", err)
				c.Close()
				return
			}
			pipe.Conns(c, up)
		}()
	}
}

// runAddress forwards to host:port through a shadow, which dials it from inside the cluster.
func runAddress(ctx context.Context, cfg Config) error {
	host, portStr, _ := net.SplitHostPort(cfg.Target)
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("%q: the port is not a number from 1 to 65535", cfg.Target)
	}
	local := port
	if len(cfg.Ports) > 0 && cfg.Ports[0].Local != 0 {
		local = cfg.Ports[0].Local
	}
	l, err := listen(cfg, local)
	if err != nil {
		return err
	}
	defer l.Close()
	sess, err := session.Start(ctx, cfg.RESTConfig, cfg.Client, session.Options{Namespace: cfg.Namespace, Role: wire.RoleForward,
		Command: cfg.Command, Pod: cfg.Pod, Progress: cfg.ErrOut})
	if err != nil {
		return err
	}
	defer func() {
		if err := sess.Close(); err == nil {
			fmt.Fprintln(cfg.ErrOut, "Stopped forwarding; deleted the shadow")
		}
	}()
	d := &tunnel.Dialer{Agent: func() tunnel.PortDialer { return sess }}
	fmt.Fprintf(cfg.ErrOut, "Forwarding %s -> %s (dialled from shadow %s/%s). Ctrl-C to stop.\n", l.Addr(), net.JoinHostPort(host, portStr), cfg.Namespace, sess.Pod.Name)
	go func() {
		// keep the SSH control connection (and so the shadow) alive
		for ctx.Err() == nil {
			if c, err := sess.SSH(ctx); err == nil {
				select {
				case <-ctx.Done():
				case <-c.Done():
				}
			} else {
				time.Sleep(time.Second)
			}
		}
	}()
	serve(ctx, l, func(ctx context.Context) (net.Conn, error) { return d.DialHost(ctx, cfg.Target) }, cfg.ErrOut)
	return nil
}

// runPods forwards to a pod of the target (a Service, a Deployment, a StatefulSet or one pod),
// picking another when it goes away.
func runPods(ctx context.Context, cfg Config) error {
	src, err := resolve(ctx, cfg)
	if err != nil {
		return err
	}
	ports := make([]*podPort, len(cfg.Ports))
	for i, pp := range cfg.Ports {
		if ports[i], err = src.portOf(pp.Remote); err != nil {
			return err
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i, pp := range cfg.Ports {
		local := pp.Local
		if local == 0 {
			local = ports[i].local
		}
		l, err := listen(cfg, local)
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	f := &podPicker{cfg: cfg, src: src, ports: ports}
	if _, err := f.pick(ctx); err != nil {
		return err
	}
	defer f.close()
	var wg sync.WaitGroup
	for i, l := range ls {
		fmt.Fprintf(cfg.ErrOut, "Forwarding %s -> %s port %s (pod %s)\n", l.Addr(), src.what, ports[i].remote, f.podName())
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(ctx, l, func(ctx context.Context) (net.Conn, error) { return f.dial(ctx, ports[i]) }, cfg.ErrOut)
		}()
	}
	fmt.Fprintln(cfg.ErrOut, "Ctrl-C to stop.")
	wg.Wait()
	fmt.Fprintln(cfg.ErrOut, "Stopped forwarding")
	return nil
}

type podPicker struct {
	cfg   Config
	src   *podSource
	ports []*podPort // each must resolve on the pod picked

	picking sync.Mutex
	mu      sync.Mutex
	pod     *corev1.Pod
	dialer  *portforward.Dialer
}

func (f *podPicker) podName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pod.Name
}

// pick chooses a running, ready pod of the target on which every port resolves.
func (f *podPicker) pick(ctx context.Context) (*portforward.Dialer, error) {
	pods, err := f.src.pods(ctx, f.cfg)
	if err != nil {
		return nil, err
	}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || !podutils.IsPodReady(p) {
			continue
		}
		for _, pp := range f.ports {
			if _, err := pp.on(p); err != nil {
				return nil, err
			}
		}
		d := portforward.NewDialer(f.cfg.RESTConfig, f.cfg.Client, f.cfg.Namespace, p.Name)
		d.Timeout = f.cfg.Pod.PortForwardTimeout
		f.mu.Lock()
		if f.dialer != nil {
			f.dialer.Close()
		}
		f.pod, f.dialer = p, d
		f.mu.Unlock()
		return d, nil
	}
	if f.src.selector == nil {
		return nil, fmt.Errorf("%s is not running and ready", f.src.what)
	}
	return nil, fmt.Errorf("%s has no running, ready pod to forward to", f.src.what)
}

// dial connects to port on the current pod; when that pod is gone, it picks another and
// tries again.
func (f *podPicker) dial(ctx context.Context, port *podPort) (net.Conn, error) {
	f.mu.Lock()
	d, pod := f.dialer, f.pod
	f.mu.Unlock()
	if p, err := f.cfg.Client.CoreV1().Pods(f.cfg.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err == nil && p.UID == pod.UID && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
		if n, err := port.on(pod); err == nil {
			if c, err := d.Dial(ctx, n); err == nil {
				return c, nil
			}
		}
	}
	f.picking.Lock() // one pick for all the connections that found the pod gone
	f.mu.Lock()
	d, now := f.dialer, f.pod
	f.mu.Unlock()
	if now == pod {
		var err error
		if d, err = f.pick(ctx); err != nil {
			f.picking.Unlock()
			return nil, err
		}
		f.mu.Lock()
		now = f.pod
		f.mu.Unlock()
		fmt.Fprintf(f.cfg.ErrOut, "Pod %s is gone; forwarding to pod %s now\n", pod.Name, now.Name)
	}
	f.picking.Unlock()
	n, err := port.on(now)
	if err != nil {
		return nil, err
	}
	c, err := d.Dial(ctx, n)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("forward to pod %s", now.Name), err)
	}
	return c, nil
}

func (f *podPicker) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dialer != nil {
		f.dialer.Close()
	}
}
