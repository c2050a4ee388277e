package dns

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
)

// SplitDNSSupported reports whether SplitDNS works here.
func SplitDNSSupported() bool { return true }

// SplitDNS adds a Name Resolution Policy Table rule sending the domains to server, whose port
// must be 53 (NRPT rules name servers by address only).
func SplitDNS(server string, domains []string, pid int) error {
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return err
	}
	if port != "53" {
		return fmt.Errorf("Windows sends names only to port 53: use --dns-addr %s", net.JoinHostPort(host, "53"))
	}
	var ns []string
	for _, d := range domains {
		ns = append(ns, "'."+strings.Trim(d, ".")+"'")
	}
	return powershell(fmt.Sprintf("Add-DnsClientNrptRule -Namespace %s -NameServers '%s' -Comment '%s (pid %d)'", strings.Join(ns, ","), host, SplitComment, pid))
}

// RemoveSplitDNS removes every NRPT rule kt added.
func RemoveSplitDNS() error {
	return powershell(fmt.Sprintf("Get-DnsClientNrptRule | Where-Object { $_.Comment -like '%s*' } | Remove-DnsClientNrptRule -Force", SplitComment))
}

func powershell(script string) error {
	out, err := exec.Command("powershell", "-NoProfile", "-NonInteractive", "-Command", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("powershell %q: %w: %s", script, err, strings.TrimSpace(string(out)))
	}
	return nil
}
