package session

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// SharedID is the session id, and so the name suffix, of a namespace's shared shadow.
const SharedID = "shared"

// A shared shadow serves every client that can read its join key (a Secret of its name) and
// port-forward to it: a later client registers its own key over the agent's loopback health
// port, proving the join key (wire/join.go), so no private key is ever stored in the cluster.
// The last client to leave deletes the pod; if it was killed, the agent expires and
// `kubectl kt clean` removes the pod.

// sharedPod returns the running shared shadow, or creates it; joined tells which.
func (s *Session) sharedPod(ctx context.Context, spec cluster.ShadowSpec) (*corev1.Pod, bool, error) {
	pods := s.client.CoreV1().Pods(spec.Namespace)
	name := wire.ShadowName(spec.Role, SharedID)
	for attempt := 0; attempt < 5; attempt++ {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil && !cluster.PodEnding(p):
			return p, true, nil
		case err == nil:
			// Finished or going away: make room for a new one.
			cluster.DeleteShadow(ctx, s.client, spec.Namespace, name)
			if err := waitGone(ctx, s, spec.Namespace, name); err != nil {
				return nil, false, err
			}
		case !apierrors.IsNotFound(err):
			return nil, false, cluster.Explain(err, "get", "pods", spec.Namespace)
		}
		key, err := cluster.EnsureJoinSecret(ctx, s.client, spec.Namespace, name, map[string]string{
			wire.ManagedByLabel: wire.ManagedBy, wire.RoleLabel: spec.Role, wire.SessionLabel: SharedID})
		if err != nil {
			return nil, false, fmt.Errorf("the shared shadow's join key: %w", err)
		}
		p, err = cluster.CreateShadow(ctx, s.client, spec)
		if err == nil {
			if err := cluster.OwnJoinSecret(ctx, s.client, p); err != nil {
				cluster.DeleteShadow(context.WithoutCancel(ctx), s.client, spec.Namespace, name)
				return nil, false, err
			}
			s.joinKey = key
			return p, false, nil
		}
		if !apierrors.IsAlreadyExists(err) && !strings.Contains(err.Error(), "already exists") {
			return nil, false, err
		}
		// Another client created it meanwhile: join it.
	}
	return nil, false, fmt.Errorf("could not create or join the shared shadow %s/%s", spec.Namespace, name)
}

func waitGone(ctx context.Context, s *Session, ns, name string) error {
	for i := 0; i < 100; i++ {
		if _, err := s.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the old shared shadow %s/%s is still being deleted", ns, name)
}

// agentHTTP is an HTTP client to the agent's health port through the port-forward d.
func agentHTTP(d *portforward.Dialer) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.Dial(ctx, wire.HealthPort)
		},
	}}
}

// Drain waits, after Service ns/name has been switched away from the pod at ip that d
// reaches (a shadow with remote forwards or a mesh router), until the pod can be deleted
// without a client's connection reaching it: until the Service no longer lists ip
// (cluster.DrainEndpoint, which then gives kube-proxy wire.KubeProxySync to follow), and
// then until the pod has taken no connection for as long. The endpoint list changes at
// once; kube-proxy, on a busy node, can take seconds more, and nothing in the API shows
// when it has.
func Drain(ctx context.Context, client kubernetes.Interface, ns, name, ip string, d *portforward.Dialer) {
	cluster.DrainEndpoint(ctx, client, ns, name, ip, 10*time.Second)
	waitQuiet(ctx, d, 30*time.Second)
}

// waitQuiet waits until the pod that d reaches has taken no connection for
// wire.KubeProxySync. It gives up quietly after timeout, or when the pod cannot be asked.
func waitQuiet(ctx context.Context, d *portforward.Dialer, timeout time.Duration) {
	hc := agentHTTP(d)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/traffic", nil)
		resp, err := hc.Do(req)
		if err != nil {
			klog.FromContext(ctx).V(1).Info("ask the pod for its traffic", "err", err)
			return
		}
		var t wire.Traffic
		err = json.NewDecoder(resp.Body).Decode(&t)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			klog.FromContext(ctx).V(1).Info("the pod's traffic", "status", resp.Status, "err", err)
			return
		}
		klog.FromContext(ctx).V(2).Info("the pod's traffic", "sinceLastAccept", t.SinceLastAccept)
		if t.SinceLastAccept >= wire.KubeProxySync {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wire.KubeProxySync - t.SinceLastAccept):
		}
	}
}

// authorize registers this session's key with a shared agent (retrying while it starts), and
// pins the agent's host key from its answer: only the pod that holds the namespace's join key
// can answer, so a pod that someone else made under the shared shadow's name gets no login.
func (s *Session) authorize(ctx context.Context) error {
	if s.joinKey == nil {
		k, err := cluster.JoinKey(ctx, s.client, s.Pod)
		if err != nil {
			return err
		}
		s.joinKey = k
	}
	deadline := time.Now().Add(s.opts.Pod.PortForwardTimeout)
	var lastErr error
	for delay := 50 * time.Millisecond; time.Now().Before(deadline) && ctx.Err() == nil; delay = min(2*delay, time.Second) {
		_, hostKey, status, err := joinRequest(ctx, agentHTTP(s.Dialer), "/authorize", wire.JoinAuthorize, s.joinKey, s.signer.PublicKey())
		switch {
		case err == nil:
			s.hostKey.Pin(hostKey)
			return nil
		case status == http.StatusNotFound:
			return fmt.Errorf("shadow %s/%s is not a shared shadow (%v); stop the connect that made it, or run 'kubectl kt clean'", s.opts.Namespace, s.Pod.Name, err)
		case status != 0:
			// The agent answered, and refused: trying again changes nothing.
			return fmt.Errorf("join the shared shadow %s/%s: %v", s.opts.Namespace, s.Pod.Name, err)
		}
		lastErr = err
		time.Sleep(delay)
	}
	return fmt.Errorf("join the shared shadow %s/%s: %v", s.opts.Namespace, s.Pod.Name, lastErr)
}

// joinRequest POSTs a wire.JoinRequest for purpose to path and checks the agent's answer
// against joinKey; it returns the answer and the agent's host key in it. status is the HTTP
// status when the agent answered with an error, or when its answer does not prove the key
// (then 0 < status < 300).
func joinRequest(ctx context.Context, hc *http.Client, path, purpose string, joinKey []byte, key gossh.PublicKey) (wire.JoinReply, gossh.PublicKey, int, error) {
	req := wire.JoinRequest{Key: string(gossh.MarshalAuthorizedKey(key)), Nonce: make([]byte, wire.JoinNonceLen)}
	rand.Read(req.Nonce)
	req.MAC = wire.RequestMAC(joinKey, purpose, req)
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+path, bytes.NewReader(body))
	var reply wire.JoinReply
	resp, err := hc.Do(hreq)
	if err != nil {
		return reply, nil, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK {
		return reply, nil, resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &reply); err != nil {
		return reply, nil, resp.StatusCode, fmt.Errorf("the agent's answer: %v", err)
	}
	if !hmac.Equal(reply.MAC, wire.ReplyMAC(joinKey, reply, req.Nonce)) {
		return reply, nil, resp.StatusCode, fmt.Errorf("the pod's answer does not prove the namespace's join key: it is not the shared shadow kt made (whoever made it can read your traffic); delete it, or ask who did")
	}
	hostKey, _, _, _, err := gossh.ParseAuthorizedKey([]byte(reply.HostKey))
	if err != nil {
		return reply, nil, resp.StatusCode, fmt.Errorf("the agent's host key: %v", err)
	}
	return reply, hostKey, 0, nil
}

// leaveShared tells the shared agent that this session leaves, and returns how many other
// clients it still serves (an unreachable agent serves nobody).
func (s *Session) leaveShared() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.joinKey == nil {
		return 1 // never joined: cannot tell, leave it to the others, its expiry and clean
	}
	reply, _, status, err := joinRequest(ctx, agentHTTP(s.Dialer), "/leave", wire.JoinLeave, s.joinKey, s.signer.PublicKey())
	switch {
	case err != nil && status == 0:
		klog.FromContext(ctx).V(1).Info("shared shadow: leave", "err", err)
		return 0
	case err != nil:
		klog.FromContext(ctx).V(1).Info("shared shadow: leave", "err", err)
		return 1 // cannot tell: leave it to the others, its expiry and clean
	}
	klog.FromContext(ctx).V(1).Info("shared shadow: leaving", "others", reply.Others)
	return reply.Others
}

// othersRemain reports whether other clients still use the shared shadow.
func (s *Session) othersRemain() bool { return s.others > 0 }
