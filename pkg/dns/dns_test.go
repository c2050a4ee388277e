package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func TestClassifier(t *testing.T) {
	c := NewClassifier("cluster.local", []string{"kt-e2e", "default"}, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")})
	for name, want := range map[string]bool{
		"web.":                          true,
		"web.kt-e2e.":                   true,
		"web.kt-e2e.svc.":               true,
		"web.kt-e2e.svc.cluster.local.": true,
		"db-0.db.kt-e2e.":               true,
		"example.com.":                  false,
		"web.other.":                    false,
		"4.0.96.10.in-addr.arpa.":       true,
		"4.3.2.1.in-addr.arpa.":         false,
		"":                              false,
	} {
		if got := c.IsCluster(name); got != want {
			t.Errorf("IsCluster(%q) = %v, want %v", name, got, want)
		}
	}
}

func answer(name, ip string, rcode int) Exchanger {
	return func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
		r := new(mdns.Msg)
		r.SetReply(m)
		r.Rcode = rcode
		if ip != "" {
			rr, _ := mdns.NewRR(m.Question[0].Name + " 30 IN A " + ip)
			r.Answer = append(r.Answer, rr)
		}
		return r, nil
	}
}

func TestServerOrder(t *testing.T) {
	calls := map[string]int{}
	count := func(n string, e Exchanger) Exchanger {
		return func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) { calls[n]++; return e(ctx, m) }
	}
	cls := NewClassifier("cluster.local", []string{"ns"}, nil)
	s := &Server{CacheTTL: time.Minute, cache: map[cacheKey]cacheEntry{}, Sources: []Source{
		{Name: "cluster", Exchange: count("cluster", func(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
			if strings.HasPrefix(m.Question[0].Name, "web.") {
				return answer("", "10.96.0.42", 0)(ctx, m)
			}
			return answer("", "", mdns.RcodeNameError)(ctx, m)
		}), OnlyFor: cls.IsCluster},
		{Name: "broken", Exchange: func(context.Context, *mdns.Msg) (*mdns.Msg, error) { return nil, errors.New("down") }},
		{Name: "upstream", Exchange: count("upstream", answer("", "192.0.2.1", 0))},
	}}
	q := func(name string) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		return s.Resolve(context.Background(), m)
	}
	if r := q("web.ns."); len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "10.96.0.42") {
		t.Errorf("cluster name: %v", r.Answer)
	}
	if r := q("example.com."); len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "192.0.2.1") {
		t.Errorf("outside name: %v", r.Answer)
	}
	if calls["cluster"] != 1 {
		t.Errorf("an outside name went to the cluster: %v", calls)
	}
	if r := q("printer."); !strings.Contains(r.Answer[0].String(), "192.0.2.1") {
		t.Errorf("single label unknown to the cluster falls through to upstream: %v", r)
	}
	q("web.ns.")
	if calls["cluster"] != 2 {
		t.Errorf("cached answer asked again: %v", calls)
	}
}

func TestResolvConfApplyRestore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	orig := "# generated\nnameserver 10.243.1.1\nsearch corp.example\noptions ndots:2 timeout:1\n"
	os.WriteFile(p, []byte(orig), 0o644)
	saved, err := ApplyResolvConf(p, "127.0.0.153", []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"}, 42)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	rc := ParseResolvConf(b)
	if len(rc.Nameservers) != 1 || rc.Nameservers[0] != "127.0.0.153" || rc.Search[0] != "ns.svc.cluster.local" || rc.Search[3] != "corp.example" || rc.Options[0] != "ndots:2" {
		t.Errorf("applied resolv.conf:\n%s", b)
	}
	if _, err := ApplyResolvConf(p, "127.0.0.153", nil, 43); err == nil {
		t.Error("a second apply over kt's content was accepted")
	}
	if string(saved) != orig {
		t.Errorf("apply returned %q as the original", saved)
	}
	if err := RestoreResolvConf(p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != orig {
		t.Errorf("restored:\n%s\nwant:\n%s", b, orig)
	}
}

func TestHostsBlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	orig := "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
	os.WriteFile(p, []byte(orig), 0o644)
	WriteHostsBlock(p, []HostEntry{{"10.96.0.2", []string{"web", "web.ns"}}})
	WriteHostsBlock(p, []HostEntry{{"10.96.0.3", []string{"db.ns"}}, {"10.96.0.2", []string{"web", "web.ns"}}})
	b, _ := os.ReadFile(p)
	if strings.Count(string(b), Marker+" BEGIN") != 1 || !strings.Contains(string(b), "10.96.0.3\tdb.ns\n") || !strings.HasPrefix(string(b), orig) {
		t.Errorf("hosts with block:\n%s", b)
	}
	if !HasHostsBlock(p) {
		t.Error("HasHostsBlock = false")
	}
	RemoveHostsBlock(p)
	if b, _ := os.ReadFile(p); string(b) != orig {
		t.Errorf("after removal:\n%q", b)
	}
}

func TestResolvedCommandsSplitClusterNamesOntoTheLink(t *testing.T) {
	got := ResolvedCommands("kt0", "127.0.0.153", []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"}, []string{"ns", "other"})
	want := [][]string{
		{"dns", "kt0", "127.0.0.153"},
		{"domain", "kt0", "ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "~ns", "~other"},
		{"default-route", "kt0", "false"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if ResolvedRunning([]byte("nameserver 10.0.0.1\n")) {
		t.Error("a plain resolv.conf is not systemd-resolved's")
	}
}

// A reader of the hosts file sees the old block or the new one, never half a file: 2050
// entries rewritten while it reads.
func TestHostsBlockIsReplacedAtOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	orig := "127.0.0.1\tlocalhost\n"
	os.WriteFile(p, []byte(orig), 0o640)
	block := func(gen int) []HostEntry {
		var e []HostEntry
		for i := range 2050 {
			e = append(e, HostEntry{fmt.Sprintf("10.96.%d.%d", i/250, i%250), []string{fmt.Sprintf("svc%d-%d.ns%d", i, gen, i%40)}})
		}
		return e
	}
	done := make(chan struct{})
	bad := make(chan string, 1)
	go func() {
		defer close(bad)
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(p)
			if err != nil || !strings.HasPrefix(string(b), orig) || HasHostsBlock(p) && !strings.HasSuffix(string(b), Marker+" END\n") && string(b) != orig {
				bad <- fmt.Sprintf("%v, %d bytes", err, len(b))
				return
			}
		}
	}()
	for gen := range 20 {
		if err := WriteHostsBlock(p, block(gen)); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if s, ok := <-bad; ok {
		t.Errorf("a reader saw a partial hosts file: %s", s)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's own 0640 kept", fi.Mode().Perm())
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".hosts.kt-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
