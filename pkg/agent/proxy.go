package agent

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// The pod-proxy front (wire/proxy.go) takes reverse streams that come through the API
// server's pod proxy. It listens on the pod's IP, where any pod may connect: everything it
// reads before the proof is bounded in size, time and number, and a stream that does not
// prove the secret never reaches the pool.

// maxProxyRequest bounds the upgrade request (the API server adds a few headers of its own).
const maxProxyRequest = 16 << 10

// serveProxy serves the front at cfg.ProxyPort, when set.
func (a *agent) serveProxy() error {
	if a.cfg.ProxyPort == 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(a.cfg.PodIP, strconv.Itoa(a.cfg.ProxyPort)))
	if err != nil {
		return err
	}
	a.closers = append(a.closers, l.Close)
	a.run("pod-proxy front", func() error { return serveProxyFront(l, a.secret, &a.reverse) })
	return nil
}

// serveProxyFront accepts streams on l and hands those that upgrade and prove secret to pool.
func serveProxyFront(l net.Listener, secret []byte, pool *reversePool) error {
	pending := make(chan struct{}, maxPending)
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		select {
		case pending <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { <-pending }()
			c.SetDeadline(time.Now().Add(authTimeout))
			if err := proxyHandshake(c, secret); err != nil {
				klog.Background().V(1).Info("refused a pod-proxy stream", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			pool.welcome(c)
		}()
	}
}

// errRefused is a front's refusal, told to the peer as a plain HTTP answer.
type errRefused struct {
	status int
	why    string
}

func (e *errRefused) Error() string { return e.why }

// proxyHandshake reads the upgrade request, answers it, sends a nonce and checks the proof.
func proxyHandshake(c net.Conn, secret []byte) error {
	br := bufio.NewReader(io.LimitReader(c, maxProxyRequest))
	req, err := http.ReadRequest(br)
	if err == nil {
		err = checkProxyRequest(req)
		if err == nil && br.Buffered() > 0 {
			err = &errRefused{http.StatusBadRequest, "bytes after the upgrade request, before the nonce"}
		}
	}
	if err != nil {
		status := http.StatusBadRequest
		if r, ok := err.(*errRefused); ok {
			status = r.status
		}
		io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(status)+" "+http.StatusText(status)+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return err
	}
	nonce := make([]byte, wire.ProxyNonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	answer := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + wire.ProxyUpgrade + "\r\n\r\n"
	if _, err := c.Write(append([]byte(answer), nonce...)); err != nil {
		return err
	}
	want := wire.ProxyProof(secret, nonce)
	proof := make([]byte, len(want))
	if _, err := io.ReadFull(c, proof); err != nil {
		return wire.ErrBadAuth
	}
	if !hmac.Equal(proof, want) {
		return wire.ErrBadAuth
	}
	return nil
}

func checkProxyRequest(req *http.Request) error {
	switch {
	case req.Method != http.MethodGet:
		return &errRefused{http.StatusMethodNotAllowed, "method " + req.Method}
	case req.URL.Path != wire.ProxyPath:
		return &errRefused{http.StatusNotFound, "path " + req.URL.Path}
	case !strings.EqualFold(req.Header.Get("Upgrade"), wire.ProxyUpgrade) ||
		!strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade"):
		return &errRefused{http.StatusUpgradeRequired, "no upgrade to " + wire.ProxyUpgrade}
	}
	return nil
}
