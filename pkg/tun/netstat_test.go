package tun

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParseNetstatFindsOverlappingRoutes(t *testing.T) {
	out := []byte(`Routing tables

Internet:
Destination        Gateway            Flags        Netif Expire
default            192.168.1.1        UGScg          en0
10.96/16           link#14            UCS          utun3
10.244             192.168.64.2       UGSc        bridge100
127                127.0.0.1          UCS            lo0
192.168.1          link#6             UCS            en0
`)
	got := parseNetstat(out, netip.MustParsePrefix("10.96.0.0/12"), "utun9")
	want := []string{"10.96.0.0/16 dev utun3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	got = parseNetstat(out, netip.MustParsePrefix("10.244.0.0/24"), "utun9")
	if want := []string{"10.244.0.0/16 dev bridge100"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := parseNetstat(out, netip.MustParsePrefix("10.96.0.0/16"), "utun3"); len(got) != 0 {
		t.Errorf("kt's own device is no overlap: %q", got)
	}
}
