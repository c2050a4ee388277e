package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// inCluster is a minimal API client on the pod's service account token: enough to restore one
// Service and delete the agent's own pod, without a full client library in the image.
type inCluster struct {
	base  string
	token string
	http  *http.Client
}

func newInCluster() (*inCluster, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" {
		return nil, fmt.Errorf("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return nil, fmt.Errorf("no service account token: %w", err)
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &inCluster{
		base:  "https://" + net.JoinHostPort(host, port),
		token: strings.TrimSpace(string(token)),
		http:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}, nil
}

func (c *inCluster) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return &apiError{code: resp.StatusCode, msg: strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }

// restoreService undoes this session's change to ns/name, retrying on conflicts.
func restoreService(ctx context.Context, c *inCluster, svcRef, session string) error {
	ns, name, ok := strings.Cut(svcRef, "/")
	if !ok {
		return fmt.Errorf("bad service reference %q", svcRef)
	}
	path := "/api/v1/namespaces/" + ns + "/services/" + name
	for attempt := 0; attempt < 5; attempt++ {
		var svc corev1.Service
		if err := c.do(ctx, http.MethodGet, path, nil, &svc); err != nil {
			if ae, ok := err.(*apiError); ok && ae.code == http.StatusNotFound {
				return nil
			}
			return err
		}
		r, err := wire.RestoreService(&svc, session)
		if err != nil || !r.Changed {
			return err
		}
		if r.Kept {
			klog.FromContext(ctx).Info("the service's selector was changed while kt held it; it stays", "service", svcRef, "ktWouldRestore", r.Original)
		}
		err = c.do(ctx, http.MethodPut, path, &svc, nil)
		if ae, ok := err.(*apiError); ok && ae.code == http.StatusConflict {
			continue
		}
		if err == nil {
			klog.FromContext(ctx).Info("restored the service of the gone client", "service", svcRef)
		}
		return err
	}
	return fmt.Errorf("restore %s: conflicts kept happening", svcRef)
}

// selfRestore runs when the client is gone: it restores the Service the client had changed,
// deletes the origin Service the session made for the fallback, and deletes the agent's own pod (its service account and role go with it, as the pod owns
// them), or the Deployment that runs the agent.
func selfRestore(cfg Config) {
	if cfg.RestoreService == "" && cfg.Deployment == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := newInCluster()
	if err != nil {
		klog.FromContext(ctx).Error(err, "cannot clean up after my client myself; run 'kubectl kt clean'", "service", cfg.RestoreService, "deployment", cfg.Deployment)
		return
	}
	if cfg.Deployment != "" {
		path := "/apis/apps/v1/namespaces/" + cfg.PodNamespace + "/deployments/" + cfg.Deployment
		if err := c.do(ctx, http.MethodDelete, path, map[string]any{"propagationPolicy": "Background"}, nil); err != nil {
			klog.FromContext(ctx).Error(err, "delete my Deployment; run 'kubectl kt clean'", "deployment", cfg.Deployment)
		} else {
			klog.FromContext(ctx).Info("deleted my Deployment", "deployment", cfg.Deployment)
		}
		if cfg.RestoreService == "" {
			return
		}
	}
	if err := restoreService(ctx, c, cfg.RestoreService, cfg.Session); err != nil {
		klog.FromContext(ctx).Error(err, "restore failed; run 'kubectl kt clean'", "service", cfg.RestoreService)
		return
	}
	if cfg.OriginService != "" {
		path := "/api/v1/namespaces/" + cfg.PodNamespace + "/services/" + cfg.OriginService
		if err := c.do(ctx, http.MethodDelete, path, nil, nil); err != nil {
			klog.FromContext(ctx).Error(err, "delete the origin Service; run 'kubectl kt clean'", "service", cfg.OriginService)
		}
	}
	if cfg.PodName != "" {
		path := "/api/v1/namespaces/" + cfg.PodNamespace + "/pods/" + cfg.PodName
		if err := c.do(ctx, http.MethodDelete, path, map[string]any{"gracePeriodSeconds": 0}, nil); err != nil {
			klog.FromContext(ctx).Error(err, "delete my own pod")
		}
	}
}
