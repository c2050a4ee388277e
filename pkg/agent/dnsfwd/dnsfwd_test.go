package dnsfwd

import (
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

func TestCandidates(t *testing.T) {
	f := &Forwarder{Ndots: 5, Search: []string{"ns.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}}
	for _, c := range []struct {
		q    string
		want []string
	}{
		{"web.", []string{"web.ns.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."}},
		{"web.other.", []string{"web.other.ns.svc.cluster.local.", "web.other.svc.cluster.local.", "web.other.cluster.local.", "web.other."}},
		{"web.ns.svc.cluster.local.", []string{"web.ns.svc.cluster.local."}},
		{"db-0.db.ns.svc.cluster.local.", []string{"db-0.db.ns.svc.cluster.local."}},
		{"4.0.96.10.in-addr.arpa.", []string{"4.0.96.10.in-addr.arpa."}},
		{"a.b.c.d.e.f.", []string{"a.b.c.d.e.f.", "a.b.c.d.e.f.ns.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."}},
	} {
		if diff := cmp.Diff(c.want, f.Candidates(c.q)); diff != "" {
			t.Errorf("Candidates(%q) (-want +got):\n%s", c.q, diff)
		}
	}
}

// cluster starts a miekg DNS server that knows one service, like CoreDNS would.
func cluster(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case q.Name == "web.ns.svc.cluster.local." && q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR("web.ns.svc.cluster.local. 5 IN A 10.96.0.42")
			m.Answer = append(m.Answer, rr)
		case q.Name == "web.ns.svc.cluster.local.":
			// exists, no record of that type: NOERROR with no answers
		case q.Name == "_http._tcp.web.ns.svc.cluster.local." && q.Qtype == dns.TypeSRV:
			rr, _ := dns.NewRR("_http._tcp.web.ns.svc.cluster.local. 5 IN SRV 0 100 80 web.ns.svc.cluster.local.")
			m.Answer = append(m.Answer, rr)
		case q.Name == "42.0.96.10.in-addr.arpa." && q.Qtype == dns.TypePTR:
			rr, _ := dns.NewRR("42.0.96.10.in-addr.arpa. 5 IN PTR web.ns.svc.cluster.local.")
			m.Answer = append(m.Answer, rr)
		case q.Name == "ext.ns.svc.cluster.local.":
			rr, _ := dns.NewRR("ext.ns.svc.cluster.local. 5 IN CNAME web.ns.svc.cluster.local.")
			rr2, _ := dns.NewRR("web.ns.svc.cluster.local. 5 IN A 10.96.0.42")
			m.Answer = append(m.Answer, rr, rr2)
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestResolve(t *testing.T) {
	f := &Forwarder{Servers: []string{cluster(t)}, Ndots: 5, Timeout: time.Second,
		Search: []string{"ns.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}}
	for _, c := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer string
	}{
		{"web.", dns.TypeA, dns.RcodeSuccess, "web.\t5\tIN\tA\t10.96.0.42"},
		{"web.ns.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "web.ns.svc.cluster.local.\t5\tIN\tA\t10.96.0.42"},
		{"web.ns.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"_http._tcp.web.ns.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, "_http._tcp.web.ns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 web.ns.svc.cluster.local."},
		{"42.0.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "42.0.96.10.in-addr.arpa.\t5\tIN\tPTR\tweb.ns.svc.cluster.local."},
		{"ext.", dns.TypeA, dns.RcodeSuccess, "ext.\t5\tIN\tCNAME\tweb.ns.svc.cluster.local."},
		{"nope.", dns.TypeA, dns.RcodeNameError, ""},
	} {
		q := new(dns.Msg)
		q.SetQuestion(c.name, c.qtype)
		q.Id = 4711
		resp := f.Resolve(q)
		if resp.Id != 4711 || resp.Question[0].Name != c.name {
			t.Errorf("%s: reply id %d question %v", c.name, resp.Id, resp.Question)
		}
		if resp.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[resp.Rcode], dns.RcodeToString[c.rcode])
		}
		got := ""
		if len(resp.Answer) > 0 {
			got = resp.Answer[0].String()
		}
		if got != c.answer {
			t.Errorf("%s %s: first answer %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.answer)
		}
	}
}

func TestResolveNoServer(t *testing.T) {
	f := &Forwarder{Servers: []string{"127.0.0.1:1"}, Ndots: 1, Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("x.", dns.TypeA)
	if r := f.Resolve(q); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}
