package wire

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ResumedRequest is an SSH global request; the agent replies with what happened to the
// connection's forwarded ports before it took them over from a gone connection (JSON,
// Resumed).
const ResumedRequest = "kt-resumed@" + Domain

// Resumed says how long a connection's ports were paused (their traffic relayed to their
// fallback) before it took them over, and how many connections went there meanwhile.
type Resumed struct {
	Paused  time.Duration `json:"paused"`
	Relayed int           `json:"relayed"`
}

// MaxFallbacks bounds the ports of EnvFallback.
const MaxFallbacks = 64

// FormatFallback writes the forwarded ports' fallbacks as EnvFallback holds them:
// "PORT=IP:PORT,…", in port order.
func FormatFallback(fb map[int]string) string {
	ports := make([]int, 0, len(fb))
	for p := range fb {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		parts = append(parts, strconv.Itoa(p)+"="+fb[p])
	}
	return strings.Join(parts, ",")
}

// ParseFallback reads EnvFallback. Each port is 1-65535 and each target an IP literal with a
// port (the origin Service's ClusterIP: no name to resolve, nothing else to dial); at most
// MaxFallbacks of them.
func ParseFallback(s string) (map[int]string, error) {
	fb := map[int]string{}
	if s == "" {
		return fb, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxFallbacks {
		return nil, fmt.Errorf("%d fallbacks: at most %d", len(parts), MaxFallbacks)
	}
	for _, part := range parts {
		ps, target, ok := strings.Cut(part, "=")
		port, err := strconv.Atoi(ps)
		if !ok || err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("fallback %q: want PORT=IP:PORT with a port from 1 to 65535", part)
		}
		host, tp, err := net.SplitHostPort(target)
		n, perr := strconv.Atoi(tp)
		if err != nil || net.ParseIP(host) == nil || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("fallback %q: want PORT=IP:PORT with an IP address", part)
		}
		if _, dup := fb[port]; dup {
			return nil, fmt.Errorf("fallback %q: port %d given twice", part, port)
		}
		fb[port] = net.JoinHostPort(host, strconv.Itoa(n))
	}
	return fb, nil
}
