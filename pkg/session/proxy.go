package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// maxProxyFails is how many reverse streams in a row may fail through the pod proxy without
// an answer, while the port-forward works (a network policy that drops the API server's
// packets to the pod), before the session keeps to the port-forward.
const maxProxyFails = 3

// Each stream through the pod proxy is a connection of its own to the API server, a TLS
// handshake there: a mirror's kept connections take a few, but copies of many short
// connections (plain TCP, WebSocket) would take one each. Beyond proxyDialRate a second
// (proxyDialBurst at once), replacements take the port-forward, whose streams cost no
// handshake.
const (
	proxyDialRate  = 5
	proxyDialBurst = 8
)

// dialReverse opens a reverse stream: through the API server's pod proxy when the shadow
// takes them there (wire/proxy.go), else, or once the API server has refused this client the
// proxy (no permission for pods/proxy, the pod's IP out of its reach) or it failed
// maxProxyFails times in a row, through the port-forward, which it says once. Failing both
// ways (the API server restarting) changes nothing.
func (s *Session) dialReverse(ctx context.Context, secret []byte, warn *warner) (c net.Conn, viaProxy bool, err error) {
	port := cluster.ProxyPort(s.Pod)
	if port == 0 || s.proxyRefused.Load() || !s.proxyDials.Allow() {
		c, err = s.Dial(ctx, wire.ReversePort)
		return c, false, err
	}
	var perr error
	if c, perr = s.dialProxy(ctx, port, secret); perr == nil {
		s.proxyFails.Store(0)
		return c, true, nil
	}
	c, err = s.Dial(ctx, wire.ReversePort)
	var refused *portforward.ProxyRefusedError
	switch {
	case errors.As(perr, &refused):
	case err == nil && ctx.Err() == nil && s.proxyFails.Add(1) >= maxProxyFails:
		// the port-forward works where the proxy does not: not an outage of the API server
	default:
		klog.FromContext(ctx).V(1).Info("pod proxy: no reverse stream this time", "err", perr)
		return c, false, err
	}
	if s.proxyRefused.CompareAndSwap(false, true) {
		hint := ""
		if refused != nil && strings.HasPrefix(refused.Status, "403") {
			hint = " (grant pods/proxy get, as docs/rbac.yaml does)"
		}
		warn.say("note: forwarded connections take the port-forward, which costs the node more: %v%s\n", perr, hint)
	}
	return c, false, err
}

// usedProxy says, the first time only (of the command's sessions, when they share a Said),
// that a connection came through the pod proxy.
func (s *Session) usedProxy(warn *warner) {
	used := &s.proxyUsed
	if s.opts.Said != nil {
		used = &s.opts.Said.proxyUsed
	}
	if used.CompareAndSwap(false, true) {
		warn.say("Connections come through the API server's pod proxy (it dials the shadow pod itself).\n")
	}
}

// dialProxy opens a reverse stream through the pod proxy and answers the agent's nonce.
func (s *Session) dialProxy(ctx context.Context, port int, secret []byte) (net.Conn, error) {
	c, err := s.Dialer.DialProxy(ctx, port, wire.ProxyPath, wire.ProxyUpgrade)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	nonce := make([]byte, wire.ProxyNonceLen)
	if _, err := io.ReadFull(c, nonce); err != nil {
		c.Close()
		return nil, fmt.Errorf("read the shadow's nonce: %w", err)
	}
	if _, err := c.Write(wire.ProxyProof(secret, nonce)); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
