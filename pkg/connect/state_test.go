//go:build !windows

package connect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// In a shared /tmp another user can make the state directory first, or plant a symlink in
// it: connect refuses both and never writes through a link.
func TestStateDirRefusesOthers(t *testing.T) {
	base := t.TempDir()
	t.Run("a directory open to others", func(t *testing.T) {
		dir := filepath.Join(base, "open")
		os.Mkdir(dir, 0o777)
		os.Chmod(dir, 0o777)
		t.Setenv("KT_STATE_DIR", dir)
		if _, _, err := Acquire("https://a", netadmin.Direct{}); err == nil || !strings.Contains(err.Error(), "want 0700") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a symlink to a directory", func(t *testing.T) {
		target := filepath.Join(base, "target")
		os.Mkdir(target, 0o700)
		dir := filepath.Join(base, "link")
		os.Symlink(target, dir)
		t.Setenv("KT_STATE_DIR", dir)
		if _, _, err := Acquire("https://a", netadmin.Direct{}); err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("another user's directory", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		dir := filepath.Join(base, "theirs")
		os.Mkdir(dir, 0o700)
		os.Chown(dir, 65534, 65534)
		t.Setenv("KT_STATE_DIR", dir)
		if _, _, err := Acquire("https://a", netadmin.Direct{}); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a symlinked state file", func(t *testing.T) {
		dir := filepath.Join(base, "mine")
		t.Setenv("KT_STATE_DIR", dir)
		if err := checkStateDir(dir); err != nil {
			t.Fatal(err)
		}
		victim := filepath.Join(base, "victim")
		os.WriteFile(victim, []byte("precious"), 0o600)
		os.Symlink(victim, statePath("https://a"))
		l, _, err := Acquire("https://a", netadmin.Direct{})
		if err == nil {
			l.Save(&State{PID: 1})
			l.Release()
			t.Error("a symlinked state file was opened")
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Errorf("the symlink's target was written: %q", b)
		}
	})
	t.Run("a new directory is 0700", func(t *testing.T) {
		dir := filepath.Join(base, "new", "kubectl-kt")
		t.Setenv("KT_STATE_DIR", dir)
		l, _, err := Acquire("https://a", netadmin.Direct{})
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("mode %o", fi.Mode().Perm())
		}
	})
}
