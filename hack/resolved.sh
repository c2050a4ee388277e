#!/usr/bin/env bash
# Fetches systemd-resolved for the e2e test of connect's per-link DNS: Debian's package is
# unpacked under $KT_ROOT/resolved, not installed (installing it would take over this
# machine's /etc/resolv.conf), and the system user it runs as is created. The test runs it
# with a private D-Bus in a mount namespace of its own inside the laptop netns.
set -euo pipefail
KT_ROOT=${KT_ROOT:-/var/tmp/ktcluster}
dir=$KT_ROOT/resolved
if [[ ! -x $dir/root/lib/systemd/systemd-resolved ]]; then
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && { apt-get download -q systemd-resolved 2>/dev/null || { apt-get update -q >/dev/null && apt-get download -q systemd-resolved 2>/dev/null; }; } && dpkg-deb -x systemd-resolved_*.deb root)
  echo "resolved: unpacked $(ls "$dir"/*.deb | xargs -n1 basename) into $dir/root"
fi
id systemd-resolve >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin systemd-resolve
