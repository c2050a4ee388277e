package dns

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"
)

const (
	hostsBegin = Marker + " BEGIN (restored on exit; if it stays, run 'kubectl kt clean --local-only')"
	hostsEnd   = Marker + " END"
)

// HostEntry is one line of kt's block in /etc/hosts.
type HostEntry struct {
	IP    string
	Names []string
}

// WriteHostsBlock replaces kt's block in the hosts file with entries (in place).
func WriteHostsBlock(path string, entries []HostEntry) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	base := stripBlock(cur)
	var b bytes.Buffer
	b.Write(base)
	if len(base) > 0 && !bytes.HasSuffix(base, []byte("\n")) {
		b.WriteByte('\n')
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Names[0] < entries[j].Names[0] })
	b.WriteString(hostsBegin + "\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "%s\t%s\n", e.IP, strings.Join(e.Names, " "))
	}
	b.WriteString(hostsEnd + "\n")
	if bytes.Equal(b.Bytes(), cur) {
		return nil
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// RemoveHostsBlock removes kt's block, leaving the rest of the file byte for byte.
func RemoveHostsBlock(path string) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	base := stripBlock(cur)
	if bytes.Equal(base, cur) {
		return nil
	}
	return os.WriteFile(path, base, 0o644)
}

// HasHostsBlock reports whether the file holds kt's block.
func HasHostsBlock(path string) bool {
	cur, err := os.ReadFile(path)
	return err == nil && bytes.Contains(cur, []byte(hostsBegin))
}

func stripBlock(b []byte) []byte {
	i := bytes.Index(b, []byte(hostsBegin))
	if i < 0 {
		return b
	}
	j := bytes.Index(b[i:], []byte(hostsEnd+"\n"))
	if j < 0 {
		return b[:i]
	}
	return append(append([]byte{}, b[:i]...), b[i+j+len(hostsEnd)+1:]...)
}
