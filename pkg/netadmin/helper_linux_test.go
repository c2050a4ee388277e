package netadmin

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/tun"
)

func testServer(uid int) *server {
	s := newServer(uid)
	s.taken = func(map[string]bool) ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.243.1.2/32")}, nil
	}
	s.allowed = func() []netip.Prefix { return clusterRanges }
	return s
}

// serve decodes and handles one request as ServeHelper does.
func serve(s *server, req request) error {
	b, _ := json.Marshal(req)
	req, err := decodeRequest(b)
	if err != nil {
		return err
	}
	_, files, err := s.handle(req)
	closeAll(files)
	return err
}

// The helper runs as root on behalf of whoever sudoers lets run it: it must refuse anything
// beyond what connect needs, before touching the system.
func TestHelperRefusesWhatConnectDoesNotNeed(t *testing.T) {
	s := testServer(1000)
	s.tuns["kt0"] = true
	for _, c := range []struct {
		req  request
		want string
	}{
		{request{Op: "apply-resolv", Path: "/etc/passwd", Server: "127.0.0.1"}, "edits only /etc/resolv.conf"},
		{request{Op: "apply-resolv", Path: "/etc/hosts", Server: "127.0.0.1"}, "edits only /etc/resolv.conf"},
		{request{Op: "restore-resolv", Path: "/etc/hosts"}, "edits only /etc/resolv.conf"},
		{request{Op: "write-hosts", Path: "/etc/sudoers", Entries: []dns.HostEntry{{IP: "10.0.0.1", Names: []string{"x"}}}}, "edits only /etc/hosts"},
		{request{Op: "remove-hosts", Path: "/etc/resolv.conf"}, "edits only /etc/hosts"},
		{request{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "127.0.0.1\nnameserver 6.6.6.6"}, "bad DNS server"},
		{request{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "10.6.6.6"}, "not a loopback address"},
		{request{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "127.0.0.1", Search: []string{"a b"}}, "bad domain"},
		{request{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "10.0.0.1", Names: []string{"x\n1.2.3.4 evil"}}}}, "bad name"},
		{request{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "not-an-ip", Names: []string{"x"}}}}, "bad address"},
		{request{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "10.0.0.1"}}}, "has 0 names"},
		{request{Op: "add-routes", Name: "eth0"}, "only into the TUN device this helper made"},
		{request{Op: "remove-tun", Name: "eth0"}, "not a TUN device of kt's"},
		{request{Op: "listen-dns", Addr: "0.0.0.0:53"}, "loopback"},
		{request{Op: "listen-dns", Addr: "127.0.0.1:953"}, "only port 53"},
		{request{Op: "listen-dns", Addr: "[::1%lo]:53"}, "loopback"},
		{request{Op: "create-tun", Name: "kt0 up"}, "bad interface name"},
		{request{Op: "create-tun", Name: "kt%d%d"}, "bad interface name"},
		{request{Op: "create-tun", Name: "eth9"}, "only TUN devices named kt"},
		{request{Op: "link-dns", Name: "kt0", Server: "127.0.0.2", Search: []string{"ns.svc\noptions ndots:15"}}, "bad domain"},
		{request{Op: "link-dns", Name: "kt0", Server: "127.0.0.2", NSs: make([]string, 40)}, "at most 32"},
		{request{Op: "chmod"}, "unknown request"},
	} {
		err := serve(s, c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error with %q", c.req, err, c.want)
		}
	}
}

// An IPv6 zone takes any characters, newlines included: the lines it would inject into the
// hosts file and resolv.conf (shown with the earlier helper) never get there.
func TestHelperRefusesZones(t *testing.T) {
	s := testServer(1000)
	for _, req := range []request{
		{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "fe80::1%x\n10.6.6.6 github.com proxy.golang.org\n#", Names: []string{"web"}}}},
		{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "::1%x\nnameserver 10.6.6.6\noptions ndots:15"},
	} {
		if err := serve(s, req); err == nil || !strings.Contains(err.Error(), "zone") {
			t.Errorf("%+v: got %v, want the zone refused", req, err)
		}
	}
	if len(s.hosts) > 0 || len(s.resolv) > 0 {
		t.Errorf("the helper recorded edits: %v %v", s.hosts, s.resolv)
	}
}

// restore-resolv takes no content from the caller: an "orig" field is not even decoded.
func TestHelperRestoreTakesNoContent(t *testing.T) {
	req, err := decodeRequest([]byte(`{"op":"restore-resolv","path":"/etc/resolv.conf","orig":"bmFtZXNlcnZlciAxMC42LjYuNgo="}`))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(req); strings.Contains(string(b), "orig") {
		t.Errorf("the decoded request carries content: %s", b)
	}
}

func TestCheckRoute(t *testing.T) {
	taken := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.243.1.2/32")}
	for _, c := range []struct {
		p, want string
	}{
		{"10.96.0.0/16", ""},
		{"10.244.0.0/16", ""},
		{"fd00:10:96::/112", ""},
		{"0.0.0.0/0", "wider than /8"},
		{"::/0", "wider than /16"},
		{"0.0.0.0/1", "wider than /8"},
		{"8.8.8.0/24", "outside the private ranges"},
		{"2001:db8::/32", "outside the private ranges"},
		{"127.0.0.0/8", "reserved"},
		{"169.254.169.254/32", "reserved"},
		{"fe80::/64", "reserved"},
		{"224.0.0.0/24", "reserved"},
		{"192.168.0.0/16", "overlaps 192.168.1.0/24"},
		{"10.243.0.0/16", "overlaps 10.243.1.2/32"},
	} {
		err := checkRoute(netip.MustParsePrefix(c.p), clusterRanges, taken)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: got %v, want %q", c.p, err, c.want)
		}
	}
	if err := checkRoute(netip.MustParsePrefix("10.96.0.1/16"), clusterRanges, nil); err == nil {
		t.Error("an unmasked prefix was accepted")
	}
	if err := checkRoute(netip.MustParsePrefix("203.0.113.0/24"), append(clusterRanges, netip.MustParsePrefix("203.0.113.0/24")), nil); err != nil {
		t.Errorf("a range the administrator allowed: %v", err)
	}
}

func TestHelperBoundsRoutes(t *testing.T) {
	s := testServer(1000)
	s.tuns["kt0"] = true
	s.routes = maxRoutes - 1
	err := serve(s, request{Op: "add-routes", Name: "kt0", Routes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16")}})
	if err == nil || !strings.Contains(err.Error(), "at most 256 routes") {
		t.Errorf("got %v", err)
	}
	b, _ := json.Marshal(request{Op: "add-routes", Name: "kt0", Routes: make([]netip.Prefix, maxRoutes+1)})
	if _, err := decodeRequest(b); err == nil {
		t.Error("a request with too many routes was decoded")
	}
	err = serve(s, request{Op: "add-routes", Name: "kt0", Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}})
	if err == nil || !strings.Contains(err.Error(), "wider") {
		t.Errorf("default route: %v", err)
	}
}

// Root must never run a program from the caller's PATH (sudoers without secure_path keeps it).
func TestHelperIgnoresCallersPath(t *testing.T) {
	saved := os.Environ()
	t.Cleanup(func() {
		os.Clearenv()
		for _, kv := range saved {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	evil := t.TempDir()
	os.WriteFile(filepath.Join(evil, "resolvectl"), []byte("#!/bin/sh\ntouch "+evil+"/ran\n"), 0o755)
	os.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	os.Setenv("LD_PRELOAD", evil+"/x.so")
	sanitizeEnv()
	if p, err := exec.LookPath("resolvectl"); err == nil && strings.HasPrefix(p, evil) {
		t.Errorf("resolvectl resolves to the caller's %s", p)
	}
	if os.Getenv("PATH") != securePath || os.Getenv("LD_PRELOAD") != "" {
		t.Errorf("environment after sanitizeEnv: %v", os.Environ())
	}
	dns.ApplyResolved([][]string{{"status"}}) // runs the real one, if any
	if _, err := os.Stat(evil + "/ran"); err == nil {
		t.Error("the caller's resolvectl ran")
	}
}

// remove-tun removes only the caller's own devices: the helper makes each TUN device the
// caller's (TUNSETOWNER), and another user's, or root's, is refused.
func TestHelperRemovesOnlyOwnTUN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create TUN devices")
	}
	root, err := tun.Create("kttest%d", 1500) // root's own, as a root connect makes it
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	alice, bob := testServer(65534), testServer(65533)
	if err := serve(alice, request{Op: "remove-tun", Name: root.Name()}); err == nil || !strings.Contains(err.Error(), "not yours") {
		t.Errorf("root's device: %v", err)
	}
	resp, files, err := alice.handle(request{Op: "create-tun", Name: "kttest%d", MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	l, err := netlink.LinkByName(resp.Name)
	if err != nil || l.(*netlink.Tuntap).Owner != 65534 {
		t.Fatalf("the helper's device %s: %v owner %v", resp.Name, err, l)
	}
	if err := serve(bob, request{Op: "remove-tun", Name: resp.Name}); err == nil || !strings.Contains(err.Error(), "not yours") {
		t.Errorf("another user's device: %v", err)
	}
	if err := serve(alice, request{Op: "remove-tun", Name: resp.Name}); err != nil {
		t.Errorf("the user's own device: %v", err)
	}
}
