//go:build !darwin && !windows

package dns

import "fmt"

// SplitDNSSupported reports whether SplitDNS works here: on Linux connect edits resolv.conf
// or uses systemd-resolved instead.
func SplitDNSSupported() bool { return false }

// SplitDNS is not used here.
func SplitDNS(server string, domains []string, pid int) error {
	return fmt.Errorf("per-domain DNS files are not used on this system")
}

// RemoveSplitDNS has nothing to remove here.
func RemoveSplitDNS() error { return nil }
