#!/usr/bin/env bash
# krew-manifest.sh VERSION DIST > plugins/krew.yaml
# Writes the krew manifest (apiVersion krew.googlecontainertools.github.com/v1alpha2) for the
# archives goreleaser put in DIST, with their SHA-256 from DIST/checksums.txt.
set -euo pipefail
version=${1:?version, e.g. 0.1.0}
dist=${2:-dist}
sum() { awk -v f="$1" '$2 == f {print $1}' "$dist/checksums.txt"; }
cat <<YAML
# Generated from the release archives by hack/krew-manifest.sh (make release-snapshot, or a release).
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: kt
spec:
  version: v${version}
  homepage: https://github.com/kubectl-kt/kt
  shortDescription: Develop a microservice locally while it lives in the cluster
  description: |
    kubectl kt joins your machine to a cluster's network (pod IPs, ClusterIPs and cluster
    DNS names work locally), sends all or only header-marked requests of a Service to a
    process on your machine (exchange, mesh), and exposes local processes in the cluster
    (preview). Everything it changes is restored on exit, and after a crash by the shadow
    pod itself or by 'kubectl kt clean'.
YAML
# quoted: the caveats' shell line is printed as it is
cat <<'YAML'
  caveats: |
    'kubectl kt connect' creates a TUN device and edits DNS settings: run it with sudo,
    or use 'kubectl kt connect --disable-tun' for a SOCKS5 proxy that needs no root.

    'kubectl kt <TAB>' completes through kubectl's own completion (kubectl 1.26+) and
    kubectl_complete-kt, which krew does not put on PATH. Once, on Linux or macOS:
      printf '#!/bin/sh\nexec kubectl-kt __complete "$@"\n' > "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-kt" && chmod +x "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-kt"
  platforms:
YAML
for os in linux darwin windows; do
  for arch in amd64 arm64; do
    ext=tar.gz bin=kubectl-kt
    if [[ $os == windows ]]; then ext=zip bin=kubectl-kt.exe; fi
    file=kubectl-kt_${version}_${os}_${arch}.${ext}
    sha=$(sum "$file")
    [[ -n $sha ]] || { echo "no checksum for $file in $dist/checksums.txt" >&2; exit 1; }
    cat <<YAML
  - selector:
      matchLabels: {os: ${os}, arch: ${arch}}
    uri: https://github.com/kubectl-kt/kt/releases/download/v${version}/${file}
    sha256: ${sha}
    bin: ${bin}
    files:
    - {from: ${bin}, to: .}
    - {from: LICENSE, to: .}
YAML
    if [[ $os != windows ]]; then
      echo "    - {from: kubectl_complete-kt, to: .}"
    else
      echo "    - {from: wintun-LICENSE.txt, to: .}" # the exe carries wintun.dll itself
    fi
  done
done
