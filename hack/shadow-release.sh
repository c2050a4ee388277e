#!/usr/bin/env bash
# shadow-release.sh VERSION COMMIT [REPO]
# The release's shadow image (goreleaser runs it as a before hook): builds the agent for
# linux/amd64 and linux/arm64 as the release builds kubectl-kt, and writes to dist/shadow/ one
# OCI image-layout and one docker-archive tarball per architecture (release assets; `ctr images
# import` loads the latter). With REPO (a release: ghcr.io/kubectl-kt/shadow) it pushes the
# multi-arch image index as REPO:vVERSION, the name a released kubectl-kt defaults to, and
# writes its digest to dist/shadow/shadow-image.txt, which the release notes carry.
# KT_SHADOW_OUT names another directory (the e2e test's).
set -euo pipefail
version=${1:?version, e.g. 0.1.0}
commit=${2:?commit}
repo=${3:-}
out=${KT_SHADOW_OUT:-dist/shadow}
rm -rf "$out" && mkdir -p "$out"
name=ghcr.io/kubectl-kt/shadow:v$version
ldflags="-s -w -X github.com/kubectl-kt/kt/pkg/version.Version=v$version -X github.com/kubectl-kt/kt/pkg/version.Commit=$commit"
go build -o "$out/imgbuild" ./hack/imgbuild
bins=()
for arch in amd64 arm64; do
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$out/shadow-linux-$arch" ./shadow
  "$out/imgbuild" -name "$name" -entrypoint /shadow -bin "linux/$arch=$out/shadow-linux-$arch" \
    -oci "$out/shadow-image_${version}_linux_$arch.oci.tar" \
    -docker "$out/shadow-image_${version}_linux_$arch.docker.tar" -docker-platform "linux/$arch"
  bins+=(-bin "linux/$arch=$out/shadow-linux-$arch")
done
if [[ -n $repo ]]; then
  "$out/imgbuild" -name "$name" -entrypoint /shadow "${bins[@]}" \
    -push "$repo:v$version" -digest-file "$out/shadow-image.txt"
fi
