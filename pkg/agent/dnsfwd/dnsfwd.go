// Package dnsfwd is the agent's DNS forwarder. The client sends it queries through the
// tunnel; it resolves them the way a process in the pod would, with the pod's nameserver,
// search list and ndots, and answers for the name that was asked.
package dnsfwd

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"k8s.io/klog/v2"
)

// Forwarder answers DNS queries by asking the pod's nameservers.
type Forwarder struct {
	Servers []string // host:port
	Search  []string // fully qualified, with trailing dots
	Ndots   int
	Timeout time.Duration

	once     sync.Once
	udp, tcp *dns.Client
}

// FromResolvConf builds a Forwarder from a resolv.conf file (the pod's /etc/resolv.conf).
func FromResolvConf(path string) (*Forwarder, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f := &Forwarder{Ndots: cc.Ndots}
	for _, s := range cc.Servers {
		f.Servers = append(f.Servers, joinHostPort(s, cc.Port))
	}
	for _, s := range cc.Search {
		f.Search = append(f.Search, dns.Fqdn(s))
	}
	return f, nil
}

func joinHostPort(h, p string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]:" + p
	}
	return h + ":" + p
}

// Candidates lists the names to try for qname, in order, as a resolver in the pod would.
// Queries on the wire are always fully qualified, so the ndots rule decides: a name with
// fewer dots than ndots tries the search list first. A name already inside a search domain
// is asked as it is, without the doomed lookups of it with a suffix appended.
func (f *Forwarder) Candidates(qname string) []string {
	qname = dns.Fqdn(qname)
	for _, s := range f.Search {
		if strings.HasSuffix(strings.ToLower(qname), "."+strings.ToLower(s)) {
			return []string{qname}
		}
	}
	if qname == "." || strings.HasSuffix(qname, ".arpa.") {
		return []string{qname}
	}
	dots := strings.Count(strings.TrimSuffix(qname, "."), ".")
	var out []string
	if dots >= f.Ndots {
		out = append(out, qname)
	}
	for _, s := range f.Search {
		out = append(out, qname+s)
	}
	if dots < f.Ndots {
		out = append(out, qname)
	}
	return out
}

// ServeDNS implements dns.Handler.
func (f *Forwarder) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	resp := f.Resolve(r)
	if err := w.WriteMsg(resp); err != nil {
		klog.Background().V(4).Info("dns: write reply", "err", err)
	}
}

// Resolve answers r.
func (f *Forwarder) Resolve(r *dns.Msg) *dns.Msg {
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		return m
	}
	q := r.Question[0]
	var nx *dns.Msg
	var lastErr error
	for _, name := range f.Candidates(q.Name) {
		m := r.Copy()
		m.Question[0].Name = name
		resp, err := f.exchange(m)
		if err != nil {
			lastErr = err
			continue
		}
		if resp.Rcode == dns.RcodeNameError {
			nx = resp
			continue
		}
		// NOERROR (also with no answers: the name exists, the type does not) or another
		// final code ends the search, as in a stub resolver.
		rename(resp, name, q.Name)
		resp.Id = r.Id
		klog.Background().V(4).Info("dns: answered", "q", q.Name, "as", name, "type", dns.TypeToString[q.Qtype], "rcode", dns.RcodeToString[resp.Rcode], "answers", len(resp.Answer))
		return resp
	}
	m := new(dns.Msg)
	if nx != nil {
		m.SetRcode(r, dns.RcodeNameError)
		m.Ns = nx.Ns
		for _, rr := range m.Ns {
			rr.Header().Ttl = min(rr.Header().Ttl, 30)
		}
		return m
	}
	klog.Background().V(1).Info("dns: no nameserver answered", "q", q.Name, "err", lastErr)
	m.SetRcode(r, dns.RcodeServerFailure)
	return m
}

// rename makes an answer for the expanded name read as an answer for the name asked.
func rename(m *dns.Msg, from, to string) {
	m.Question[0].Name = to
	if strings.EqualFold(from, to) {
		return
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if strings.EqualFold(rr.Header().Name, from) {
				rr.Header().Name = to
			}
		}
	}
}

func (f *Forwarder) exchange(m *dns.Msg) (*dns.Msg, error) {
	f.once.Do(func() {
		t := f.Timeout
		if t == 0 {
			t = 2 * time.Second
		}
		f.udp = &dns.Client{Net: "udp", Timeout: t, UDPSize: dns.DefaultMsgSize}
		f.tcp = &dns.Client{Net: "tcp", Timeout: t}
	})
	var lastErr error
	for _, s := range f.Servers {
		resp, _, err := f.udp.Exchange(m, s)
		if err == nil && resp.Truncated {
			resp, _, err = f.tcp.Exchange(m, s)
		}
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no nameserver configured")
	}
	return nil, lastErr
}
