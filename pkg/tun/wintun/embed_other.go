//go:build !windows || !(amd64 || arm64)

package wintun

// embedded is nil: only the Windows builds for amd64 and arm64 carry Wintun.
var embedded []byte
