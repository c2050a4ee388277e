package dns

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

const resolverDir = "/etc/resolver"

// SplitDNSSupported reports whether SplitDNS works here.
func SplitDNSSupported() bool { return true }

// SplitDNS writes /etc/resolver/<domain> for each domain, pointing at server (host:port).
// A file kt did not write is left alone and reported.
func SplitDNS(server string, domains []string, pid int) error {
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(resolverDir, 0o755); err != nil {
		return err
	}
	for _, d := range domains {
		d = strings.Trim(d, ".")
		p := filepath.Join(resolverDir, d)
		if cur, err := os.ReadFile(p); err == nil && !bytes.Contains(cur, []byte(Marker)) {
			return fmt.Errorf("%s exists and is not kt's: remove it, or use --dns-mode hosts", p)
		}
		body := fmt.Sprintf("%s (pid %d): removed on exit; if it stays, run 'kubectl kt clean --local-only'\nnameserver %s\nport %s\n", Marker, pid, host, port)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// RemoveSplitDNS removes every resolver file kt wrote.
func RemoveSplitDNS() error {
	files, _ := filepath.Glob(filepath.Join(resolverDir, "*"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.HasPrefix(b, []byte(Marker)) {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	return nil
}
