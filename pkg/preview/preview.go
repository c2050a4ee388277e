// Package preview exposes processes on this machine inside the cluster as a new Service.
package preview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/pipe"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/undo"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Port is one exposed port: the Service's Remote reaches localhost:Local.
type Port struct{ Local, Remote int }

// Config configures Run.
type Config struct {
	RESTConfig       *rest.Config
	Client           kubernetes.Interface
	Namespace, Name  string
	Ports            []Port
	External         bool
	SkipPortChecking bool
	Pod              *cluster.PodOptions
	Command          string
	ErrOut           io.Writer
	// Start starts the shadow's session; nil starts a real one through RESTConfig.
	Start session.Starter
}

// Run creates the Service and its shadow, serves until ctx ends, and removes both.
func Run(ctx context.Context, cfg Config) (err error) {
	pipe.OneProcessor()
	if cfg.Start == nil {
		cfg.Start = session.NewStarter(cfg.RESTConfig, cfg.Client)
	}
	if _, err := cfg.Client.CoreV1().Services(cfg.Namespace).Get(ctx, cfg.Name, metav1.GetOptions{}); err == nil {
		return fmt.Errorf("service %s/%s already exists; choose another name for the preview", cfg.Namespace, cfg.Name)
	} else if !apierrors.IsNotFound(err) {
		return cluster.Explain(err, "get", "services", cfg.Namespace)
	}
	for _, p := range cfg.Ports {
		if cfg.SkipPortChecking {
			break
		}
		if err := session.CheckLocal(p.Local); err != nil {
			return err
		}
	}
	inventory.WarnStale(ctx, cfg.Client, cfg.Namespace, cfg.ErrOut)
	pv := &previewer{cfg: cfg, id: wire.NewSession()}
	var undo undo.Stack
	defer func() {
		if uerr := undo.Run(30 * time.Second); uerr != nil {
			err = errors.Join(err, uerr)
		} else if err == nil {
			fmt.Fprintf(cfg.ErrOut, "Removed preview service %s/%s and its shadow\n", cfg.Namespace, cfg.Name)
		}
	}()
	sess, err := pv.shadow(ctx, &undo, pv.id)
	if err != nil {
		return err
	}
	if err := cluster.EnsurePreviewService(ctx, cfg.Client, pv.service(), sess.ShadowPod()); err != nil {
		return err
	}
	undo.Push("delete preview service "+cfg.Name, func(ctx context.Context) error {
		return cluster.DeleteService(ctx, cfg.Client, cfg.Namespace, cfg.Name)
	})
	kind := "ClusterIP"
	if cfg.External {
		kind = "LoadBalancer"
	}
	fmt.Fprintf(cfg.ErrOut, "Previewing: service %s/%s (%s) sends its traffic to this machine: reach it in the cluster as %s.%s.svc. Ctrl-C to remove it.\n", cfg.Namespace, cfg.Name, kind, cfg.Name, cfg.Namespace)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Lost():
		}
		// The Service belonged to the lost pod, so the garbage collector removes it too: the
		// new shadow gets it back (the same name, maybe a new ClusterIP).
		sess, err = session.Replace(ctx, cfg.ErrOut, sess.ShadowPod().Name, func() (session.Shadow, error) {
			s, err := pv.shadow(ctx, &undo, wire.NewSession())
			if err == nil {
				if err = cluster.EnsurePreviewService(ctx, cfg.Client, pv.service(), s.ShadowPod()); err != nil {
					s.Close() // the next try starts another
				}
			}
			return s, err
		})
		if err != nil {
			return nil // ctx ended
		}
		fmt.Fprintf(cfg.ErrOut, "Shadow %s/%s took over: service %s sends its traffic here again\n", cfg.Namespace, sess.ShadowPod().Name, cfg.Name)
	}
}

type previewer struct {
	cfg Config
	id  string // the preview's: the Service selects the shadow by it
}

// shadow starts a shadow for the preview (also in place of a lost one), with the identity to
// delete itself after a crashed client, and serves its forwards in the background.
func (pv *previewer) shadow(ctx context.Context, undo *undo.Stack, id string) (session.Shadow, error) {
	cfg := pv.cfg
	podName := wire.ShadowName(wire.RolePreview, id)
	// The shadow may delete itself after a crashed client; the Service is owned by the pod and goes with it.
	sr, srErr := cluster.CreateSelfRestore(ctx, cfg.Client, cfg.Namespace, podName, cfg.Name, id)
	opts := session.Options{ID: id, Namespace: cfg.Namespace, Role: wire.RolePreview, Command: cfg.Command, Pod: cfg.Pod,
		Progress: cfg.ErrOut, Labels: map[string]string{wire.ExchangeLabel: pv.id}}
	if srErr == nil {
		opts.ServiceAccount, opts.RestoreService, opts.RestoreSession = sr.Name, cfg.Namespace+"/"+cfg.Name, id
		undo.Push("delete the shadow's service account", sr.Delete)
	}
	var fwds []session.Forward
	for _, p := range cfg.Ports {
		opts.ForwardPorts = append(opts.ForwardPorts, corev1.ContainerPort{ContainerPort: int32(p.Remote)})
		fwds = append(fwds, session.Forward{Remote: p.Remote, Local: session.LocalAddr(p.Local)})
	}
	sess, err := cfg.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	undo.Push("delete shadow "+sess.ShadowPod().Name, func(context.Context) error { return sess.Close() })
	if sr != nil {
		sr.OwnBy(ctx, sess.ShadowPod())
	}
	if err := sess.KeepForwarding(ctx, fwds, cfg.ErrOut); err != nil {
		return nil, err
	}
	return sess, nil
}

// service is the preview Service this preview keeps.
func (pv *previewer) service() cluster.PreviewService {
	cfg := pv.cfg
	s := cluster.PreviewService{Namespace: cfg.Namespace, Name: cfg.Name, Session: pv.id, Command: cfg.Command, External: cfg.External}
	for _, p := range cfg.Ports {
		s.Ports = append(s.Ports, p.Remote)
	}
	return s
}
