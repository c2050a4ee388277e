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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Config configures Run.
type Config struct {
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	Namespace  string
	Target     string // svc/NAME, NAME, or HOST:PORT
	Local      int    // 0: the remote port
	Remote     string // Service port (number or name); empty when the Service has one
	Address    string // local listen address
	Pod        *cluster.PodOptions
	Protocol   portforward.Protocol
	Command    string
	ErrOut     io.Writer
}

// IsAddress reports whether target is HOST:PORT rather than a Service.
func IsAddress(target string) bool {
	if strings.HasPrefix(target, "svc/") || strings.HasPrefix(target, "service/") {
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
	return runService(ctx, cfg)
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
	local := cfg.Local
	if local == 0 {
		local = port
	}
	l, err := listen(cfg, local)
	if err != nil {
		return err
	}
	defer l.Close()
	sess, err := session.Start(ctx, cfg.RESTConfig, cfg.Client, session.Options{Namespace: cfg.Namespace, Role: wire.RoleForward,
		Command: cfg.Command, Pod: cfg.Pod, Protocol: cfg.Protocol, Progress: cfg.ErrOut})
	if err != nil {
		return err
	}
	defer func() {
		if err := sess.Close(); err == nil {
			fmt.Fprintln(cfg.ErrOut, "Stopped forwarding; deleted the shadow")
		}
	}()
	d := &connect.TunnelDialer{Agent: func() connect.PortDialer { return sess }}
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

// runService forwards to a pod behind the Service, picking another when it goes away.
func runService(ctx context.Context, cfg Config) error {
	name := strings.TrimPrefix(strings.TrimPrefix(cfg.Target, "svc/"), "service/")
	svc, err := cfg.Client.CoreV1().Services(cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("service %s/%s not found; check the name and -n/--namespace", cfg.Namespace, name)
	}
	if err != nil {
		return err
	}
	if len(svc.Spec.Selector) == 0 {
		return fmt.Errorf("service %s/%s selects no pods; forward to one of its addresses as HOST:PORT instead", cfg.Namespace, name)
	}
	sp, err := servicePort(svc, cfg.Remote)
	if err != nil {
		return err
	}
	local := cfg.Local
	if local == 0 {
		local = int(sp.Port)
	}
	l, err := listen(cfg, local)
	if err != nil {
		return err
	}
	defer l.Close()
	f := &podPicker{cfg: cfg, svc: svc, port: *sp}
	if _, _, err := f.pick(ctx); err != nil {
		return err
	}
	defer f.close()
	fmt.Fprintf(cfg.ErrOut, "Forwarding %s -> service %s/%s port %d (pod %s). Ctrl-C to stop.\n", l.Addr(), cfg.Namespace, name, sp.Port, f.podName())
	serve(ctx, l, f.dial, cfg.ErrOut)
	fmt.Fprintln(cfg.ErrOut, "Stopped forwarding")
	return nil
}

// servicePort is the port of svc that remote names (its number or its name), or its only TCP
// port when remote is empty. forward carries TCP: a UDP or SCTP port is refused.
func servicePort(svc *corev1.Service, remote string) (*corev1.ServicePort, error) {
	var tcp []*corev1.ServicePort
	var all []string
	for i, p := range svc.Spec.Ports {
		desc := fmt.Sprintf("%d/%s", p.Port, protocol(p))
		if p.Name != "" {
			desc = p.Name + " " + desc
		}
		all = append(all, desc)
		if protocol(p) == corev1.ProtocolTCP {
			tcp = append(tcp, &svc.Spec.Ports[i])
		}
	}
	ports := strings.Join(all, ", ")
	named := func(p corev1.ServicePort) bool { return remote == strconv.Itoa(int(p.Port)) || remote == p.Name }
	switch {
	case remote == "" && len(tcp) == 1:
		return tcp[0], nil
	case remote == "" && len(tcp) == 0:
		return nil, fmt.Errorf("service %s has no TCP port (%s); forward carries TCP only", svc.Name, ports)
	case remote == "":
		return nil, fmt.Errorf("service %s has several TCP ports (%s); name one: kubectl kt forward svc/%s [LOCAL:]REMOTE", svc.Name, ports, svc.Name)
	}
	for _, p := range tcp { // a UDP port may share its number with the TCP one
		if named(*p) {
			return p, nil
		}
	}
	for _, p := range svc.Spec.Ports {
		if named(p) {
			return nil, fmt.Errorf("service %s: port %s is %s; forward carries TCP only", svc.Name, remote, protocol(p))
		}
	}
	return nil, fmt.Errorf("service %s has no port %q; its ports: %s", svc.Name, remote, ports)
}

func protocol(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

type podPicker struct {
	cfg  Config
	svc  *corev1.Service
	port corev1.ServicePort

	mu     sync.Mutex
	pod    string
	target uint16
	dialer *portforward.Dialer
}

func (f *podPicker) podName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pod
}

// pick chooses a running, ready pod of the Service and resolves the target port on it.
func (f *podPicker) pick(ctx context.Context) (*portforward.Dialer, uint16, error) {
	pods, err := f.cfg.Client.CoreV1().Pods(f.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(f.svc.Spec.Selector).String()})
	if err != nil {
		return nil, 0, cluster.Explain(err, "list", "pods", f.cfg.Namespace)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || !ready(&p) {
			continue
		}
		port, err := targetPort(&p, f.port)
		if err != nil {
			return nil, 0, err
		}
		d := portforward.NewDialer(f.cfg.RESTConfig, f.cfg.Client, f.cfg.Namespace, p.Name)
		d.Protocol, d.Timeout = f.cfg.Protocol, f.cfg.Pod.PortForwardTimeout
		f.mu.Lock()
		if f.dialer != nil {
			f.dialer.Close()
		}
		f.pod, f.target, f.dialer = p.Name, port, d
		f.mu.Unlock()
		return d, port, nil
	}
	return nil, 0, fmt.Errorf("service %s/%s has no ready pod to forward to", f.cfg.Namespace, f.svc.Name)
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func targetPort(p *corev1.Pod, sp corev1.ServicePort) (uint16, error) {
	if sp.TargetPort.StrVal != "" {
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == sp.TargetPort.StrVal {
					return uint16(cp.ContainerPort), nil
				}
			}
		}
		return 0, fmt.Errorf("pod %s declares no port named %q", p.Name, sp.TargetPort.StrVal)
	}
	if sp.TargetPort.IntVal != 0 {
		return uint16(sp.TargetPort.IntVal), nil
	}
	return uint16(sp.Port), nil
}

// dial connects to the current pod; when that pod is gone, it picks another and tries again.
func (f *podPicker) dial(ctx context.Context) (net.Conn, error) {
	f.mu.Lock()
	d, port, pod := f.dialer, f.target, f.pod
	f.mu.Unlock()
	if p, err := f.cfg.Client.CoreV1().Pods(f.cfg.Namespace).Get(ctx, pod, metav1.GetOptions{}); err == nil && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
		if c, err := d.Dial(ctx, port); err == nil {
			return c, nil
		}
	}
	d, port, err := f.pick(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f.cfg.ErrOut, "Pod %s is gone; forwarding to pod %s now\n", pod, f.podName())
	c, err := d.Dial(ctx, port)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("forward to pod %s", f.podName()), err)
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
