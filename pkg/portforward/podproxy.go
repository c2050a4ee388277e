package portforward

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/httpstream"
)

// ProxyRefusedError is an answer other than the upgrade to a DialProxy: the API server's (no
// permission for pods/proxy, the pod's IP unreachable from it) or the pod's own.
type ProxyRefusedError struct {
	Status string // the HTTP status line's text, e.g. "403 Forbidden"
	Reason string // the API server's message, or the body's first line
}

func (e *ProxyRefusedError) Error() string {
	if e.Reason == "" {
		return "the pod proxy answered " + e.Status
	}
	return "the pod proxy answered " + e.Status + ": " + e.Reason
}

// DialProxy opens a connection to port of the pod through the API server's pod proxy
// (pods/NAME:PORT/proxy/PATH), upgraded to protocol, which the pod must answer with 101. The
// API server dials the pod's IP itself and then relays the bytes as they come: no kubelet
// and no container runtime on the way, unlike Dial. It costs a connection to the API server
// of its own (TLS, the credentials of the config).
func (d *Dialer) DialProxy(ctx context.Context, port int, path, protocol string) (net.Conn, error) {
	raw := &rawUpgrade{protocol: protocol, timeout: d.Timeout}
	rt, err := d.upgrader(raw)
	if err != nil {
		return nil, err
	}
	u := d.client.CoreV1().RESTClient().Get().Resource("pods").Namespace(d.Namespace).
		Name(d.Pod + ":" + strconv.Itoa(port)).SubResource("proxy").Suffix(path).URL()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if err := upgradedTo(resp, protocol); err != nil {
		raw.conn.Close()
		return nil, err
	}
	return raw.conn, nil
}

// upgradedTo checks that resp switches to protocol; any other answer is a ProxyRefusedError.
func upgradedTo(resp *http.Response, protocol string) error {
	if switched(resp) && strings.EqualFold(resp.Header.Get(httpstream.HeaderUpgrade), protocol) {
		return nil
	}
	e := &ProxyRefusedError{Status: resp.Status}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		e.Reason = fmt.Sprintf("an upgrade to %q, not %q", resp.Header.Get(httpstream.HeaderUpgrade), protocol)
		return e
	}
	body, st := refusal(resp)
	if st != nil && st.Message != "" {
		e.Reason = st.Message
		return e
	}
	e.Reason, _, _ = strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(e.Reason) > 200 {
		e.Reason = e.Reason[:200]
	}
	return e
}
