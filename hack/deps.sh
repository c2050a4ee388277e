#!/usr/bin/env bash
# deps.sh - make sure the Debian packages of hack/packages.txt are installed: as root, install
# those missing with apt-get; otherwise fail at once, naming them and the command to run.
#   hack/deps.sh --check   only check
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mapfile -t pkgs < <(sed 's/#.*//' "$here/packages.txt" | awk 'NF {print $1}')
if ! command -v dpkg-query >/dev/null; then
  echo "deps: not a Debian-based system; install the equivalents of: ${pkgs[*]}" >&2
  exit 1
fi
missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null | awk '$NF == "installed" {print $1}' || true)
for p in "${pkgs[@]}"; do
  grep -qxF "$p" <<<"$installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
fix="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ ${1:-} == --check || $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "deps: missing Debian packages: ${missing[*]}; install them with: sudo $fix" >&2
  exit 1
fi
log=${KT_ROOT:-/var/tmp/ktcluster}/logs/apt.log
mkdir -p "$(dirname "$log")"
echo "deps: $fix (log: $log)"
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive $fix; } >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "deps: apt-get failed (above, and $log); install by hand: $fix" >&2
  exit 1
fi
