#!/usr/bin/env bash
# load-images.sh TARBALL... - import docker-archive tarballs into the test cluster's containerd
# (namespace k8s.io), skipping those already imported since they last changed.
set -euo pipefail
KT_ROOT=${KT_ROOT:-/var/tmp/ktcluster}
ctr=(ctr --address "$KT_ROOT/containerd/run/containerd.sock" -n k8s.io)
mkdir -p "$KT_ROOT/images"
for f in "$@"; do
  stamp=$KT_ROOT/images/.imported-$(basename "$f")
  if [[ -e $stamp && ! $f -nt $stamp ]]; then continue; fi
  "${ctr[@]}" images import "$f" >/dev/null
  touch "$stamp"
  echo "imported $f"
done
