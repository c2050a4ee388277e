#!/usr/bin/env bash
# wintun.sh [check|fetch]: the wintun.dll files in pkg/tun/wintun are Wintun 0.14.1 as
# published in wintun-0.14.1.zip. `check` (the default) verifies each one's Authenticode
# signature (WireGuard LLC, chained to a root in the system store; the CRLs are not fetched,
# as this machine has no Internet) with osslsigncode; their SHA-256 are pinned by
# `go test ./pkg/tun/wintun` (TestDLLsArePinned). `fetch` first copies them from a Go module
# that carries the official zip's contents (github.com/slackhq/nebula v1.9.5,
# dist/windows/wintun), through the Go module proxy, and runs that test.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=pkg/tun/wintun
if [[ ${1:-check} == fetch ]]; then
  src=$(go mod download -json github.com/slackhq/nebula@v1.9.5 | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/dist/windows/wintun
  for arch in amd64 arm64; do
    install -D -m 0644 "$src/bin/$arch/wintun.dll" "$dir/$arch/wintun.dll"
  done
  install -m 0644 "$src/LICENSE.txt" "$dir/LICENSE.txt"
  go test -count=1 -run TestDLLsArePinned ./$dir
fi
for f in "$dir"/*/wintun.dll; do
  if ! command -v osslsigncode >/dev/null; then
    echo "wintun: $f: no osslsigncode here for the signature (its SHA-256 is pinned by the tests)"
    continue
  fi
  out=$(osslsigncode verify -ignore-crl -ignore-cdp -CAfile /etc/ssl/certs/ca-certificates.crt \
    -TSA-CAfile /etc/ssl/certs/ca-certificates.crt -in "$f" 2>&1) || { echo "$out" >&2; echo "wintun: $f: signature not verified" >&2; exit 1; }
  grep -q "O=WireGuard LLC/CN=WireGuard LLC" <<<"$out" || { echo "wintun: $f is not signed by WireGuard LLC" >&2; exit 1; }
  echo "wintun: $f: WireGuard LLC's signature ok"
done
