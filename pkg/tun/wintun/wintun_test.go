package wintun

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// pinned is each DLL's SHA-256, by GOARCH, as published with Wintun 0.14.1.
var pinned = map[string]string{
	"amd64": "e5da8447dc2c320edc0fc52fa01885c103de8c118481f683643cacc3220dafce",
	"arm64": "f7ba89005544be9d85231a9e0d5f23b2d15b3311667e2dad0debd344918a3f80",
}

// The DLLs in the tree are the published Wintun 0.14.1 builds: a changed or truncated file
// fails here, before any release embeds it.
func TestDLLsArePinned(t *testing.T) {
	for arch, want := range pinned {
		b, err := os.ReadFile(filepath.Join(arch, FileName))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s/%s: SHA-256 %x, want %s (Wintun %s)", arch, FileName, sum, want, Version)
		}
		// a PE image for the right machine: "MZ", then the PE header's machine field
		if len(b) < 0x40 || string(b[:2]) != "MZ" {
			t.Fatalf("%s: not a PE image", arch)
		}
		pe := int(b[0x3c]) | int(b[0x3d])<<8
		machine := int(b[pe+4]) | int(b[pe+5])<<8
		if wantM := map[string]int{"amd64": 0x8664, "arm64": 0xaa64}[arch]; machine != wantM {
			t.Errorf("%s: PE machine %#x, want %#x", arch, machine, wantM)
		}
	}
}

func TestEmbeddedOnlyOnWindows(t *testing.T) {
	if runtime.GOOS != "windows" && Embedded() != nil {
		t.Fatalf("a %s build carries %d bytes of Wintun", runtime.GOOS, len(Embedded()))
	}
}

func TestInstallWritesAMissingDLL(t *testing.T) {
	dll, _ := os.ReadFile(filepath.Join("amd64", FileName))
	dir := t.TempDir()
	path, wrote, err := Install(dir, dll)
	if err != nil || !wrote || path != filepath.Join(dir, FileName) {
		t.Fatalf("Install: %q %v %v", path, wrote, err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, dll) {
		t.Fatal("the written DLL differs from the embedded one")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".wintun-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// a second run finds it and writes nothing
	if _, wrote, err := Install(dir, dll); err != nil || wrote {
		t.Fatalf("second Install: wrote %v, %v", wrote, err)
	}
}

func TestInstallKeepsTheUsersDLL(t *testing.T) {
	dir := t.TempDir()
	mine := []byte("the user's own wintun.dll")
	os.WriteFile(filepath.Join(dir, FileName), mine, 0o644)
	if _, wrote, err := Install(dir, []byte("embedded")); err != nil || wrote {
		t.Fatalf("Install: wrote %v, %v", wrote, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, FileName)); !bytes.Equal(got, mine) {
		t.Fatal("Install replaced the user's DLL")
	}
}

func TestInstallSaysHowToFix(t *testing.T) {
	// no DLL in this build
	_, _, err := Install(t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "next to kubectl-kt.exe") || !strings.Contains(err.Error(), "--disable-tun") {
		t.Fatalf("no embedded DLL: %v", err)
	}
	// a path that cannot be a directory (a regular file stands there)
	f := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(f, nil, 0o644)
	_, wrote, err := Install(f, []byte("x"))
	if err == nil || wrote || !strings.Contains(err.Error(), "next to kubectl-kt.exe") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("file for a directory: wrote %v, %v", wrote, err)
	}
	// a directory nobody can write to, root included: procfs takes no new files
	if runtime.GOOS == "linux" {
		_, wrote, err = Install("/proc/self", []byte("x"))
		if err == nil || wrote || !strings.Contains(err.Error(), "cannot write") || !strings.Contains(err.Error(), "--disable-tun") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("unwritable directory: wrote %v, %v", wrote, err)
		}
	}
}
