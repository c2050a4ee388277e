package tun

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// parseNetstat reads macOS's `netstat -rn -f inet` table: Destination Gateway Flags Netif …,
// with destinations like 10.96/16, 10.1.2.3 or default.
func parseNetstat(out []byte, p netip.Prefix, own string) []string {
	var over []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] == "default" || f[0] == "Destination" {
			continue
		}
		rp, ok := parseDest(f[0])
		if !ok || !rp.Overlaps(p) || f[3] == own {
			continue
		}
		over = append(over, fmt.Sprintf("%s dev %s", rp, f[3]))
	}
	return over
}

func parseDest(d string) (netip.Prefix, bool) {
	addr, bits, hasBits := strings.Cut(d, "/")
	parts := strings.Split(addr, ".")
	if len(parts) > 4 {
		return netip.Prefix{}, false
	}
	n := 8 * len(parts)
	for len(parts) < 4 {
		parts = append(parts, "0")
	}
	a, err := netip.ParseAddr(strings.Join(parts, "."))
	if err != nil {
		return netip.Prefix{}, false
	}
	if hasBits {
		if n, err = strconv.Atoi(bits); err != nil {
			return netip.Prefix{}, false
		}
	}
	pr, err := a.Prefix(n)
	return pr, err == nil
}
