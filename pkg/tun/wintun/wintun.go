// Package wintun carries Wintun, the TUN driver that connect uses on Windows, so that a
// missing wintun.dll is not the user's problem (kt-connect #372): the Windows builds embed
// the signed DLL of their architecture and put it beside the executable when it is not
// there, which is where wireguard-go's loader looks for it.
//
// The DLLs are Wintun 0.14.1, the last release, byte for byte as in wintun-0.14.1.zip and
// signed by WireGuard LLC; README.md says where they came from, the tests pin their SHA-256
// and hack/wintun.sh checks their signatures. LICENSE.txt is Wintun's own licence, which allows shipping the DLL with
// software that uses it only through its API, as wireguard-go does.
package wintun

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Version is the Wintun release the DLLs come from.
const Version = "0.14.1"

// FileName is the name wireguard-go loads the DLL by.
const FileName = "wintun.dll"

// Embedded returns this build's DLL, or nil where none is embedded (every build but
// Windows on amd64 and arm64).
func Embedded() []byte { return embedded }

// Install makes sure dir holds a wintun.dll. One that is there already stays, whatever its
// content: the user put it there. Otherwise dll is written (to a temporary name first, so
// that no half-written DLL is ever loaded) and read back. wrote tells which happened.
func Install(dir string, dll []byte) (path string, wrote bool, err error) {
	path = filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return path, false, fmt.Errorf("cannot look for %s (%v): put wintun.dll (Wintun %s) next to kubectl-kt.exe, or use --disable-tun", path, err, Version)
	}
	if len(dll) == 0 {
		return path, false, fmt.Errorf("%s is missing and this build of kubectl-kt carries no Wintun for its architecture: put wintun.dll from https://www.wintun.net (version %s, the build for this machine) next to kubectl-kt.exe, or use --disable-tun", path, Version)
	}
	tmp, err := os.CreateTemp(dir, ".wintun-*.dll")
	if err != nil {
		return path, false, unwritable(path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	_, werr := tmp.Write(dll)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return path, false, unwritable(path, werr)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return path, false, unwritable(path, err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, dll) {
		return path, true, fmt.Errorf("%s: written but not read back intact (%v): delete it and run again", path, err)
	}
	return path, true, nil
}

func unwritable(path string, err error) error {
	return fmt.Errorf("cannot write %s (%v): run kubectl kt as Administrator once, or put wintun.dll (Wintun %s) there yourself, or use --disable-tun", path, err, Version)
}
