package dns

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
	return replace(path, b.Bytes())
}

// replace gives path the content b at once: a new file renamed over it, so that a reader
// sees the old file or the new one, never half of it. Where path cannot be renamed over (a
// bind mount, as in a network namespace's /etc/hosts) or is a symlink, it is written in place.
func replace(path string, b []byte) error {
	mode := os.FileMode(0o644)
	fi, err := os.Lstat(path)
	if err == nil {
		mode = fi.Mode().Perm()
	}
	if err != nil || fi.Mode()&os.ModeSymlink != 0 { // a symlink stays one: written through
		return os.WriteFile(path, b, mode)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".kt-*")
	if err == nil {
		_, err = f.Write(b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(f.Name(), mode)
		}
		if err == nil {
			if err = os.Rename(f.Name(), path); err == nil {
				return nil
			}
		}
		os.Remove(f.Name())
	}
	return os.WriteFile(path, b, mode)
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
