package netadmin

import (
	"strings"
	"testing"

	"github.com/kubectl-kt/kt/pkg/dns"
)

// The helper runs as root on behalf of whoever sudoers lets run it: it must refuse anything
// beyond what connect needs, before touching the system.
func TestHelperRefusesWhatConnectDoesNotNeed(t *testing.T) {
	s := &server{resolv: map[string][]byte{}, hosts: map[string]bool{}, tuns: map[string]bool{}}
	for _, c := range []struct {
		req  request
		want string
	}{
		{request{Op: "apply-resolv", Path: "/etc/passwd", Server: "127.0.0.1"}, "edits only"},
		{request{Op: "write-hosts", Path: "/etc/sudoers"}, "edits only"},
		{request{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "127.0.0.1\nnameserver 6.6.6.6"}, "bad DNS server"},
		{request{Op: "apply-resolv", Path: "/etc/resolv.conf", Server: "127.0.0.1", Search: []string{"a b"}}, "bad search domain"},
		{request{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "10.0.0.1", Names: []string{"x\n1.2.3.4 evil"}}}}, "bad name"},
		{request{Op: "write-hosts", Path: "/etc/hosts", Entries: []dns.HostEntry{{IP: "not-an-ip", Names: []string{"x"}}}}, "bad address"},
		{request{Op: "add-routes", Name: "eth0"}, "only into the TUN device this helper made"},
		{request{Op: "remove-tun", Name: "eth0"}, "not a TUN device of kt's"},
		{request{Op: "listen-dns", Addr: "0.0.0.0:53"}, "loopback"},
		{request{Op: "create-tun", Name: "kt0 up"}, "bad interface name"},
		{request{Op: "chmod"}, "unknown request"},
	} {
		_, _, err := s.handle(c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error with %q", c.req, err, c.want)
		}
	}
}
