package connect

import (
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*Options)
		want string // "" for no error
	}{
		{"defaults", func(*Options) {}, ""},
		{"socks on loopback", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "127.0.0.5" }, ""},
		{"socks on ::1", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "::1" }, ""},
		{"socks on every address", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "0.0.0.0" }, "--allow-remote-proxy"},
		{"socks on the LAN", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "192.168.1.5" }, "not a loopback address"},
		{"socks on a name", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "myhost" }, "give an IP address"},
		{"socks remote, allowed", func(o *Options) { o.DisableTUN = true; o.ProxyAddr = "0.0.0.0"; o.AllowRemoteProxy = true }, ""},
		{"proxy flags without --disable-tun", func(o *Options) { o.ProxyPort = 1080 }, "only with --disable-tun"},
		{"bad port", func(o *Options) { o.DisableTUN = true; o.ProxyPort = 70000 }, "not a port number"},
		{"bad dns mode", func(o *Options) { o.DNSMode = "bogus" }, "--dns-mode"},
		{"bad dns order", func(o *Options) { o.DNSMode = "localDNS:cluster,nope" }, "not cluster, upstream or an IP"},
		{"bad include", func(o *Options) { o.IncludeIPs = "10.0.0.0/33" }, "--include-ips"},
		{"bad mtu", func(o *Options) { o.MTU = 100 }, "--mtu"},
		{"share and deployment", func(o *Options) { o.ShareShadow, o.ShadowDeployment = true, true }, "cannot be combined"},
		{"bad protocol", func(o *Options) { o.Protocol = "quic" }, "--port-forward-protocol"},
		{"negative tcp-early-for", func(o *Options) { o.TCPEarlyFor = -time.Second }, "--tcp-early-for"},
		{"tcp-early-for off", func(o *Options) { o.TCPEarlyFor = 0 }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := NewOptions(genericiooptions.NewTestIOStreamsDiscard())
			c.set(o)
			err := o.Validate()
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestDNSMode(t *testing.T) {
	for _, c := range []struct {
		in, mode       string
		order, hostsNS string
	}{
		{"localDNS", "localDNS", "", ""},
		{"localDNS:upstream, cluster,10.0.0.2:5353", "localDNS", "upstream cluster 10.0.0.2:5353", ""},
		{"hosts", "hosts", "", ""},
		{"hosts:dev, shared,", "hosts", "", "dev shared"},
		{"none", "none", "", ""},
	} {
		mode, order, hostsNS, err := dnsMode(c.in)
		if err != nil || mode != c.mode || strings.Join(order, " ") != c.order || strings.Join(hostsNS, " ") != c.hostsNS {
			t.Errorf("dnsMode(%q) = %q, %q, %q, %v", c.in, mode, order, hostsNS, err)
		}
	}
}
