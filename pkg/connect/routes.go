package connect

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// ParsePrefixes parses a comma-separated list of CIDRs or single IPs (as /32 or /128).
func ParsePrefixes(flag, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("--%s: %q is neither an IP address nor a CIDR; write e.g. 10.0.0.0/8,172.16.1.5", flag, f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Routes computes what to route into the TUN: the cluster ranges plus include, less exclude
// and less the never addresses (the API server's own, which must keep its normal route),
// merged so that no prefix covers another.
func Routes(cluster, include, exclude []netip.Prefix, never []netip.Addr) []netip.Prefix {
	all := append(append([]netip.Prefix{}, cluster...), include...)
	for _, a := range never {
		exclude = append(exclude, netip.PrefixFrom(a, a.BitLen()))
	}
	var out []netip.Prefix
	for _, p := range merge(all) {
		parts := []netip.Prefix{p}
		for _, x := range exclude {
			var next []netip.Prefix
			for _, q := range parts {
				next = append(next, subtract(q, x)...)
			}
			parts = next
		}
		out = append(out, parts...)
	}
	return merge(out)
}

// merge drops duplicates and prefixes covered by others, and sorts.
func merge(ps []netip.Prefix) []netip.Prefix {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Bits() != ps[j].Bits() {
			return ps[i].Bits() < ps[j].Bits()
		}
		return ps[i].Addr().Less(ps[j].Addr())
	})
	var out []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, q := range out {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// subtract returns p without x, as the fewest prefixes.
func subtract(p, x netip.Prefix) []netip.Prefix {
	if !p.Overlaps(x) || p.Addr().BitLen() != x.Addr().BitLen() {
		return []netip.Prefix{p}
	}
	if x.Bits() <= p.Bits() { // x covers p
		return nil
	}
	lo, hi := halves(p)
	return append(subtract(lo, x), subtract(hi, x)...)
}

// halves splits p into its two prefixes one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits).Masked()
	b := lo.Addr().AsSlice()
	b[(bits-1)/8] |= 0x80 >> ((bits - 1) % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}
