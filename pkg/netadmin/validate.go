package netadmin

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kubectl-kt/kt/pkg/dns"
)

// The helper and the user's process speak over a SOCK_SEQPACKET Unix socket: one JSON request,
// one JSON response per message, with file descriptors (the TUN device, the DNS sockets) passed
// alongside the response.
type request struct {
	Op      string          `json:"op"`
	Name    string          `json:"name,omitempty"`
	MTU     int             `json:"mtu,omitempty"`
	Routes  []netip.Prefix  `json:"routes,omitempty"`
	Addr    string          `json:"addr,omitempty"`
	Path    string          `json:"path,omitempty"`
	Server  string          `json:"server,omitempty"`
	Search  []string        `json:"search,omitempty"`
	PID     int             `json:"pid,omitempty"`
	Entries []dns.HostEntry `json:"entries,omitempty"`
	NSs     []string        `json:"namespaces,omitempty"`
}

type response struct {
	Err  string `json:"err,omitempty"`
	Name string `json:"name,omitempty"`
	Orig []byte `json:"orig,omitempty"`
}

const maxMessage = 1 << 20

// What the helper accepts is bounded before anything is looked at on the system: a request is
// decoded, then each field is checked on its own (decodeRequest), then against this machine
// (server.handle). Whoever may run the helper through sudo can send it anything.
const (
	maxSearch       = 32     // search domains in resolv.conf or per-link DNS
	maxHostsEntries = 100000 // lines of kt's block in the hosts file
	maxHostNames    = 64     // names on one hosts line
	maxRoutes       = 256    // routes one helper adds, in all
)

// Ops the helper serves.
var knownOps = map[string]bool{
	"create-tun": true, "add-routes": true, "remove-tun": true, "listen-dns": true,
	"apply-resolv": true, "restore-resolv": true, "write-hosts": true, "remove-hosts": true, "link-dns": true,
}

// decodeRequest parses one request and checks each field's form: names are DNS names,
// addresses carry no zone, counts are bounded.
func decodeRequest(b []byte) (request, error) {
	var req request
	if len(b) > maxMessage {
		return req, fmt.Errorf("request of %d bytes is too large", len(b))
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return req, fmt.Errorf("bad request: %w", err)
	}
	if !knownOps[req.Op] {
		return req, fmt.Errorf("unknown request %q", req.Op)
	}
	if req.Name != "" && !validIfName(req.Name) {
		return req, fmt.Errorf("bad interface name %q", req.Name)
	}
	if len(req.Search)+len(req.NSs) > maxSearch {
		return req, fmt.Errorf("%d search domains and namespaces: at most %d", len(req.Search)+len(req.NSs), maxSearch)
	}
	for _, n := range append(append([]string{}, req.Search...), req.NSs...) {
		if err := checkDNSName(n); err != nil {
			return req, fmt.Errorf("bad domain %q: %v", n, err)
		}
	}
	if req.Server != "" {
		if err := checkLoopback(req.Server); err != nil {
			return req, fmt.Errorf("bad DNS server address %q: %v", req.Server, err)
		}
	}
	if len(req.Routes) > maxRoutes {
		return req, fmt.Errorf("%d routes: at most %d", len(req.Routes), maxRoutes)
	}
	if err := checkHostEntries(req.Entries); err != nil {
		return req, err
	}
	if req.MTU < 0 || req.MTU > 65535 {
		return req, fmt.Errorf("bad MTU %d", req.MTU)
	}
	return req, nil
}

// validIfName is a Linux interface name: 1 to 15 of [a-zA-Z0-9_.-], where a trailing "%d"
// asks the kernel for the first free number.
func validIfName(n string) bool {
	if strings.HasSuffix(n, "%d") && len(n) > 2 {
		n = strings.TrimSuffix(n, "%d") + "0"
	}
	if n == "" || len(n) > 15 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

// checkDNSName accepts a DNS name: dot-separated labels of 1 to 63 letters, digits, '-' and
// '_' (SRV-style names), not starting or ending with '-', 253 characters at most; a trailing dot
// is allowed. Nothing else can then reach a line of resolv.conf or the hosts file.
func checkDNSName(n string) error {
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return fmt.Errorf("not a DNS name")
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q is not 1 to 63 characters, or starts or ends with '-'", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("character %q", r)
			}
		}
	}
	return nil
}

// parsePlainAddr parses an IP address without a zone (an IPv6 zone takes any characters).
func parsePlainAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("an address with a zone")
	}
	return a, nil
}

func checkLoopback(s string) error {
	a, err := parsePlainAddr(s)
	if err != nil {
		return err
	}
	if !a.IsLoopback() {
		return fmt.Errorf("not a loopback address")
	}
	return nil
}

func checkHostEntries(entries []dns.HostEntry) error {
	if len(entries) > maxHostsEntries {
		return fmt.Errorf("%d hosts entries: at most %d", len(entries), maxHostsEntries)
	}
	for _, e := range entries {
		if _, err := parsePlainAddr(e.IP); err != nil {
			return fmt.Errorf("bad address %q in hosts entries: %v", e.IP, err)
		}
		if len(e.Names) == 0 || len(e.Names) > maxHostNames {
			return fmt.Errorf("hosts entry for %s has %d names: 1 to %d", e.IP, len(e.Names), maxHostNames)
		}
		for _, n := range e.Names {
			if err := checkDNSName(n); err != nil {
				return fmt.Errorf("bad name %q in hosts entries: %v", n, err)
			}
		}
	}
	return nil
}

// Ranges a route into the helper's TUN device may fall in without further say: the private
// and shared address space clusters use. An administrator may allow more, one CIDR a line, in
// RouteAllowFile (owned by root, writable by nobody else).
var clusterRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("fc00::/7"),
}

// RouteAllowFile lists further ranges the helper routes (a cluster on public addresses).
const RouteAllowFile = "/etc/kubectl-kt/helper-routes"

// Never routed, whatever the allowed ranges say.
var reservedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// checkRoute says whether the helper may route p into its device: inside allowed, outside
// the reserved ranges, and overlapping none of taken (this machine's own addresses and the
// routes of its other devices, default routes aside).
func checkRoute(p netip.Prefix, allowed, taken []netip.Prefix) error {
	if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" {
		return fmt.Errorf("route %s is not a masked CIDR", p)
	}
	if min := map[bool]int{true: 8, false: 16}[p.Addr().Is4()]; p.Bits() < min {
		return fmt.Errorf("route %s is wider than /%d", p, min)
	}
	for _, r := range reservedRanges {
		if r.Overlaps(p) {
			return fmt.Errorf("route %s overlaps the reserved range %s", p, r)
		}
	}
	inside := false
	for _, a := range allowed {
		if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			inside = true
			break
		}
	}
	if !inside {
		return fmt.Errorf("route %s is outside the private ranges a cluster uses; an administrator can allow it in %s", p, RouteAllowFile)
	}
	for _, t := range taken {
		if t.Overlaps(p) {
			return fmt.Errorf("route %s overlaps %s, which this machine already routes or owns; leave it out with --exclude-ips", p, t)
		}
	}
	return nil
}
