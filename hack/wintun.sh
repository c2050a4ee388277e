#!/usr/bin/env bash
# wintun.sh [check|fetch]: the wintun.dll files in pkg/tun/wintun are Wintun 0.14.1 as
# published in wintun-0.14.1.zip. `check` (the default) verifies each one's SHA-256 against
# the pinned value and its Authenticode signature (WireGuard LLC, chained to a root in the
# system store; the CRLs are not fetched, as this machine has no Internet) with osslsigncode.
# `fetch` first copies them from a Go module that carries the official zip's contents
# (github.com/slackhq/nebula v1.9.5, dist/windows/wintun), through the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=pkg/tun/wintun
declare -A sum=(
  [amd64]=e5da8447dc2c320edc0fc52fa01885c103de8c118481f683643cacc3220dafce
  [arm64]=f7ba89005544be9d85231a9e0d5f23b2d15b3311667e2dad0debd344918a3f80
)
if [[ ${1:-check} == fetch ]]; then
  src=$(go mod download -json github.com/slackhq/nebula@v1.9.5 | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/dist/windows/wintun
  for arch in "${!sum[@]}"; do
    install -D -m 0644 "$src/bin/$arch/wintun.dll" "$dir/$arch/wintun.dll"
  done
  install -m 0644 "$src/LICENSE.txt" "$dir/LICENSE.txt"
fi
for arch in "${!sum[@]}"; do
  f=$dir/$arch/wintun.dll
  got=$(sha256sum "$f" | cut -d' ' -f1)
  [[ $got == "${sum[$arch]}" ]] || { echo "wintun: $f has SHA-256 $got, want ${sum[$arch]}" >&2; exit 1; }
  if command -v osslsigncode >/dev/null; then
    out=$(osslsigncode verify -ignore-crl -ignore-cdp -CAfile /etc/ssl/certs/ca-certificates.crt \
      -TSA-CAfile /etc/ssl/certs/ca-certificates.crt -in "$f" 2>&1) || { echo "$out" >&2; echo "wintun: $f: signature not verified" >&2; exit 1; }
    grep -q "O=WireGuard LLC/CN=WireGuard LLC" <<<"$out" || { echo "wintun: $f is not signed by WireGuard LLC" >&2; exit 1; }
    echo "wintun: $f: SHA-256 and WireGuard LLC's signature ok"
  else
    echo "wintun: $f: SHA-256 ok (no osslsigncode here for the signature)"
  fi
done
