package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/agent/router"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// RouterConfig configures the agent in its mesh-router role.
type RouterConfig struct {
	Service      string // namespace/name of the meshed Service
	Origin       string // name of the Service selecting the original pods
	OriginIP     string // its ClusterIP, when known: dialled without a DNS lookup per connection
	Ports        []int
	PodName      string
	PodNamespace string
	// MemberExpiry drops a developer whose heartbeat is older; once none is left for this
	// long, the router restores the Service and deletes itself.
	MemberExpiry time.Duration
	Poll         time.Duration
}

// RunRouter routes the Service's traffic until the last developer is gone.
func RunRouter(ctx context.Context, cfg RouterConfig) error {
	ns, name, ok := strings.Cut(cfg.Service, "/")
	if !ok {
		return fmt.Errorf("--service %q: want namespace/name", cfg.Service)
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	api, err := newInCluster()
	if err != nil {
		return err
	}
	origin := cfg.Origin + "." + ns + ".svc"
	if cfg.OriginIP != "" && cfg.OriginIP != corev1.ClusterIPNone {
		origin = cfg.OriginIP
	}
	r := router.New(origin)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, p := range cfg.Ports {
		l, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p)))
		if err != nil {
			return fmt.Errorf("router: listen on %d: %w", p, err)
		}
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			if err := r.Serve(ctx, l, p); err != nil {
				klog.FromContext(ctx).Error(err, "router: serve", "port", p)
			}
		}(p)
	}
	hs, err := serveRoutes(r)
	if err != nil {
		return err
	}
	defer hs.Close()
	klog.FromContext(ctx).Info("mesh router ready", "service", cfg.Service, "origin", cfg.Origin, "ports", cfg.Ports)
	rt := &routerLoop{cfg: cfg, api: api, r: r, ns: ns, path: "/api/v1/namespaces/" + ns + "/services/" + name, emptySince: time.Now()}
	t := time.NewTicker(cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if rt.poll(ctx) {
			return nil
		}
	}
}

// serveRoutes serves, on loopback for clients through a port-forward, /routes (which tells a
// joining one when it is routed) and /traffic (which tells a leaving one when kube-proxy no
// longer sends connections here).
func serveRoutes(r *router.Router) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/routes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Members())
	})
	mux.HandleFunc("/mirrors", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Mirrors())
	})
	handleTraffic(mux, r.SinceLastAccept)
	hl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(wire.HealthPort)))
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl)
	return hs, nil
}

// routerLoop follows the Service's mesh state, once per poll.
type routerLoop struct {
	cfg        RouterConfig
	api        *inCluster
	r          *router.Router
	ns, path   string
	emptySince time.Time // since when no developer is live
}

// poll reads the Service and routes its live members; it reports true when the router is done
// (the Service is no longer meshed through it, or every developer is gone and the Service
// restored) and has deleted itself.
func (rt *routerLoop) poll(ctx context.Context) (done bool) {
	cfg, api, r := rt.cfg, rt.api, rt.r
	var svc corev1.Service
	if err := api.do(ctx, http.MethodGet, rt.path, nil, &svc); err != nil {
		klog.FromContext(ctx).V(1).Info("router: read service", "err", err)
		return false
	}
	m, ok := wire.GetMesh(&svc)
	if !ok || m.Router != cfg.PodName {
		// The client that switched the Service away deletes this pod too, once it has
		// seen it quiet; whichever comes first.
		klog.FromContext(ctx).Info("the service is no longer meshed through this router; exiting once kube-proxy has followed")
		waitQuiet(ctx, r, wire.KubeProxySync, 30*time.Second)
		api.deleteSelf(ctx, cfg)
		return true
	}
	live := m.Live(cfg.MemberExpiry)
	r.SetMembers(live)
	if len(live) > 0 {
		rt.emptySince = time.Now()
	}
	if len(live) < len(m.Members) {
		klog.FromContext(ctx).Info("router: dropping developers whose heartbeat stopped", "left", len(m.Members)-len(live))
		api.updateService(ctx, rt.path, func(s *corev1.Service) bool {
			cur, ok := wire.GetMesh(s)
			if !ok {
				return false
			}
			cur.Members = cur.Live(cfg.MemberExpiry)
			wire.SetMesh(s, cur)
			return true
		})
	}
	if len(live) > 0 || time.Since(rt.emptySince) <= cfg.MemberExpiry {
		return false
	}
	klog.FromContext(ctx).Info("router: every developer is gone; restoring the service")
	l, _ := wire.ServiceLock(&svc)
	session := ""
	if l != nil {
		session = l.Session
	}
	if err := restoreService(ctx, api, cfg.Service, session); err != nil {
		klog.FromContext(ctx).Error(err, "router: restore; run 'kubectl kt clean'")
		return false
	}
	waitQuiet(ctx, r, wire.KubeProxySync, 30*time.Second)
	api.do(ctx, http.MethodDelete, "/api/v1/namespaces/"+rt.ns+"/services/"+cfg.Origin, nil, nil)
	api.deleteSelf(ctx, cfg)
	return true
}

// waitQuiet waits until the router has accepted no connection for quiet (kube-proxy has
// followed the Service's switch away from it, so the origin Service and this pod can go
// without a client's SYN reaching a deleted pod), or for at most max.
func waitQuiet(ctx context.Context, r *router.Router, quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	for r.SinceLastAccept() < quiet && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(quiet - r.SinceLastAccept()):
		}
	}
}

func (c *inCluster) deleteSelf(ctx context.Context, cfg RouterConfig) {
	if cfg.PodName == "" {
		return
	}
	err := c.do(ctx, http.MethodDelete, "/api/v1/namespaces/"+cfg.PodNamespace+"/pods/"+cfg.PodName, map[string]any{"gracePeriodSeconds": 0}, nil)
	if err != nil {
		klog.FromContext(ctx).Error(err, "delete my own pod")
	}
}

// updateService applies mutate with optimistic concurrency.
func (c *inCluster) updateService(ctx context.Context, path string, mutate func(*corev1.Service) bool) error {
	for i := 0; i < 5; i++ {
		var svc corev1.Service
		if err := c.do(ctx, http.MethodGet, path, nil, &svc); err != nil {
			return err
		}
		if !mutate(&svc) {
			return nil
		}
		err := c.do(ctx, http.MethodPut, path, &svc, nil)
		var ae *apiError
		if errors.As(err, &ae) && ae.code == http.StatusConflict {
			continue
		}
		return err
	}
	return fmt.Errorf("update %s: conflicts kept happening", path)
}
