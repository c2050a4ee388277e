package connect

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRoutes(t *testing.T) {
	for _, c := range []struct {
		name                      string
		cluster, include, exclude []netip.Prefix
		never                     []netip.Addr
		want                      []netip.Prefix
	}{
		{name: "plain", cluster: pfx("10.96.0.0/16", "10.244.0.0/16"), want: pfx("10.96.0.0/16", "10.244.0.0/16")},
		{name: "covered and duplicate", cluster: pfx("10.244.0.0/24", "10.244.0.0/16", "10.96.0.0/16", "10.96.0.0/16"), want: pfx("10.96.0.0/16", "10.244.0.0/16")},
		{name: "include", cluster: pfx("10.96.0.0/16"), include: pfx("172.20.0.0/16"), want: pfx("10.96.0.0/16", "172.20.0.0/16")},
		{name: "exclude whole", cluster: pfx("10.96.0.0/16", "10.244.0.0/16"), exclude: pfx("10.244.0.0/16"), want: pfx("10.96.0.0/16")},
		{name: "exclude inside", cluster: pfx("10.0.0.0/30"), exclude: pfx("10.0.0.1/32"), want: pfx("10.0.0.0/32", "10.0.0.2/31")},
		{name: "api server inside a range", cluster: pfx("10.0.0.0/29"), never: []netip.Addr{netip.MustParseAddr("10.0.0.5")}, want: pfx("10.0.0.0/30", "10.0.0.4/32", "10.0.0.6/31")},
		{name: "api server outside", cluster: pfx("10.96.0.0/16"), never: []netip.Addr{netip.MustParseAddr("10.243.1.1")}, want: pfx("10.96.0.0/16")},
	} {
		got := Routes(c.cluster, c.include, c.exclude, c.never)
		if diff := cmp.Diff(c.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestRoutesNeverContainsExcluded(t *testing.T) {
	never := netip.MustParseAddr("10.96.17.3")
	for _, r := range Routes(pfx("10.96.0.0/12"), nil, pfx("10.97.0.0/16"), []netip.Addr{never}) {
		if r.Contains(never) || r.Overlaps(netip.MustParsePrefix("10.97.0.0/16")) {
			t.Errorf("route %s covers an excluded address", r)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes("include-ips", "10.0.0.0/8, 192.168.1.7,fd00::/64")
	if err != nil || len(got) != 3 || got[1].String() != "192.168.1.7/32" {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-ip", "10.0.0.1/8/2"} {
		if _, err := ParsePrefixes("include-ips", bad); err == nil || !strings.Contains(err.Error(), "--include-ips") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}
