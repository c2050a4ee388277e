package dns

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Marker starts every line kt writes into a system file.
const Marker = "# kubectl kt connect"

// origMarker starts the line of kt's resolv.conf that keeps the original content (base64):
// the file itself, which only root writes, is where a restore takes it from, so that no
// caller of the privileged helper can have it write content of its own.
const origMarker = Marker + " original: "

// ResolvConf is a parsed resolv.conf.
type ResolvConf struct {
	Nameservers []string
	Search      []string
	Options     []string
}

// ParseResolvConf reads the parts of a resolv.conf that connect needs.
func ParseResolvConf(b []byte) ResolvConf {
	var rc ResolvConf
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			rc.Nameservers = append(rc.Nameservers, f[1])
		case "search", "domain":
			rc.Search = append(rc.Search, f[1:]...)
		case "options":
			rc.Options = append(rc.Options, f[1:]...)
		}
	}
	return rc
}

// ApplyResolvConf points the resolver at the local server and puts the cluster's search
// domains first. The file is rewritten in place (it may be a bind mount, where rename fails).
// It returns the original content, which it also keeps in the file for RestoreResolvConf.
func ApplyResolvConf(path, server string, search []string, pid int) ([]byte, error) {
	orig, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if bytes.Contains(orig, []byte(Marker)) {
		return nil, fmt.Errorf("%s already holds kt's settings from another run; run 'kubectl kt clean --local-only' first", path)
	}
	rc := ParseResolvConf(orig)
	var b strings.Builder
	fmt.Fprintf(&b, "%s (pid %d): restored on exit; if it stays, run 'kubectl kt clean --local-only'\n", Marker, pid)
	fmt.Fprintf(&b, "nameserver %s\n", server)
	fmt.Fprintf(&b, "search %s\n", strings.Join(dedupe(append(search, rc.Search...)), " "))
	if len(rc.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(rc.Options, " "))
	}
	fmt.Fprintf(&b, "%s%s\n", origMarker, base64.StdEncoding.EncodeToString(orig))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return orig, nil
}

// HasMarker reports whether the file holds kt's settings.
func HasMarker(path string) bool {
	cur, err := os.ReadFile(path)
	return err == nil && bytes.Contains(cur, []byte(Marker))
}

// RestoreResolvConf writes back the original content that ApplyResolvConf kept in the file,
// unless someone replaced kt's content meanwhile (then it leaves the file alone).
func RestoreResolvConf(path string) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(cur, []byte(Marker)) {
		return nil // changed by someone else since: leave it
	}
	orig, err := keptOriginal(cur)
	if err != nil {
		return fmt.Errorf("restore %s: %w; edit it by hand (remove kt's lines)", path, err)
	}
	return os.WriteFile(path, orig, 0o644)
}

// keptOriginal reads the original content out of kt's resolv.conf.
func keptOriginal(cur []byte) ([]byte, error) {
	for _, l := range strings.Split(string(cur), "\n") {
		if enc, ok := strings.CutPrefix(l, origMarker); ok {
			return base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		}
	}
	return nil, errors.New("kt's lines hold no original content")
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
