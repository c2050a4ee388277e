#!/usr/bin/env bash
# down.sh - stop everything up.sh started (by recorded PIDs) and undo its host changes:
# pod sandboxes (via CRI, so CNI tears down veths/IPs), processes, mounts, iptables
# rules/chains (KUBE-*, CNI-*, ktcluster-safety), routes, netns, interfaces, sysctls.
# Keeps binaries, images, PKI and etcd data, so the next up.sh is warm.
#   down.sh --purge   also deletes cluster state (etcd, PKI, containerd root, kubelet dirs).
set -uo pipefail
shopt -s extglob
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
T0=$(date +%s)
log() { printf '[down %3ss] %s\n' $(($(date +%s) - T0)) "$*"; }
[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }

pid_of() { # name -> pid if the recorded process is still the one we started
  local f=$KT_RUN/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -d /proc/$pid && -f $KT_RUN/$1.exe && $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(<"$KT_RUN/$1.exe")"?( \(deleted\)) ]] || return 1
  echo "$pid"
}
stop() { # name [timeout]
  local name=$1 t=${2:-20} pid i
  if pid=$(pid_of "$name"); then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < t * 5; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
    if [[ -d /proc/$pid ]]; then log "$name did not exit, SIGKILL"; kill -KILL "$pid"; sleep 0.5; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$KT_RUN/$name.pid" "$KT_RUN/$name.exe" "$KT_RUN/$name.started"
}

# 1. kubelet first, so it does not restart what we remove.
stop kubelet
# 2. remove all pod sandboxes through CRI (runs CNI DEL: veths, IPAM, netns go away).
if pid_of containerd >/dev/null; then
  CRI=(crictl --config "$KT_ROOT/etc/crictl.yaml")
  pods=$("${CRI[@]}" pods -q 2>/dev/null)
  if [[ -n $pods ]]; then
    "${CRI[@]}" stopp $pods >/dev/null 2>&1
    "${CRI[@]}" rmp -f $pods >/dev/null 2>&1
    log "removed pod sandboxes"
  fi
fi
# 3. the rest in parallel (TERM all, then wait), etcd last.
for n in kube-proxy containerd kube-scheduler kube-controller-manager kube-apiserver; do stop "$n" & done
wait
stop etcd
# Left-over shims (their PIDs are recorded by containerd in its state dir).
for f in "$KT_ROOT"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
  [[ -f $f ]] || continue
  pid=$(<"$f")
  if [[ -d /proc/$pid && $(readlink "/proc/$pid/exe") == */containerd-shim-runc-v2 ]]; then
    log "killing left-over shim $pid"; kill -KILL "$pid"
  fi
done
# Containers whose shim or containerd was killed keep running without a parent: delete them
# through runc (only the ids containerd recorded as ours).
RUNC_ROOT=/run/containerd/runc/k8s.io
for d in "$KT_ROOT"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*/; do
  [[ -d $d ]] || continue
  id=$(basename "$d")
  if runc --root "$RUNC_ROOT" state "$id" >/dev/null 2>&1; then
    runc --root "$RUNC_ROOT" delete --force "$id" >/dev/null 2>&1 && log "deleted orphaned container ${id:0:12}"
  fi
done
sleep 0.5

# 4. mounts under our root (pod volumes, container rootfs, sandbox shm), deepest first.
findmnt -rn -o TARGET | grep -E "^$KT_ROOT/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
# network namespaces the CNI plugins created for our pods (only those bound to our sandboxes
# are left if CRI removal failed; they are named cni-<uuid>)
for ns in $(ip netns list | awk '/^cni-/{print $1}'); do
  if [[ -n $(ip -n "$ns" -br addr 2>/dev/null | awk -v c="${NODE_POD_CIDR%.0/24}." 'index($3,c)==1') ]]; then
    ip netns del "$ns" && log "removed netns $ns"
  fi
done

# 5. iptables: our safety rules, then every KUBE-* / CNI-* chain and rule (kube-proxy, kubelet,
#    CNI portmap/bridge). Other rules are kept as they are.
DEF_IF=$(cat "$KT_RUN/default-if" 2>/dev/null || true)
for src in "$POD_CIDR" "$NODE_NET"; do
  while iptables -t mangle -D FORWARD -s "$src" -o "${DEF_IF:-none}" -m comment --comment ktcluster-safety -j DROP 2>/dev/null; do :; done
done
for fam in iptables ip6tables; do
  saved=$("$fam-save")   # (not "save | grep -q": with pipefail, SIGPIPE makes that fail)
  if grep -qE 'KUBE-|CNI-' <<<"$saved"; then
    awk '
      /^\*/ {print; next}
      /^:(KUBE-|CNI-)/ {next}
      /^-A / && /(KUBE-|CNI-)/ {next}
      {print}' <<<"$saved" | "$fam-restore"
    log "removed KUBE-*/CNI-* $fam rules"
  fi
done
conntrack -D -s "$POD_CIDR" >/dev/null 2>&1
conntrack -D -d "$SVC_CIDR" >/dev/null 2>&1

# 6. interfaces, routes, netns, addresses, sysctls.
ip link del "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE"
ip link del ktsvc0 2>/dev/null
ip link del ktlap0 2>/dev/null
ip netns del ktsink 2>/dev/null
ip netns del ktlaptop 2>/dev/null
rm -rf /etc/netns/ktlaptop; rmdir /etc/netns 2>/dev/null
ip route del "$SVC_CIDR" 2>/dev/null
ip route del blackhole "$POD_CIDR" 2>/dev/null
ip route del blackhole "$NODE_NET" 2>/dev/null
ip addr del "$NODE_IP/32" dev lo 2>/dev/null
if [[ -f $KT_RUN/sysctl.orig ]]; then
  while IFS= read -r kv; do sysctl -qw "$kv"; done <"$KT_RUN/sysctl.orig"
  rm -f "$KT_RUN/sysctl.orig"
fi
# kubelet's cgroups (empty now)
for c in /sys/fs/cgroup/*/kubepods; do
  [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf "$KT_ROOT/cni/ipam"

if [[ ${1:-} == --purge ]]; then
  rm -rf "$KT_ROOT/etcd" "$KT_ROOT/pki" "$KT_ROOT/etc" "$KT_ROOT/containerd" "$KT_ROOT/kubelet" \
    "$KT_ROOT/run" "$KT_ROOT/images"/.imported-* "$KT_KUBECONFIG" "$KT_ROOT/kubeconfig-laptop"
  log "purged cluster state (binaries and image tarballs kept)"
fi
log "down"
