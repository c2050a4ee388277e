#!/usr/bin/env bash
# up.sh - bring up a real single-node Kubernetes cluster on this machine (see README.md).
# Idempotent: builds what is missing, starts what is not running, waits for node Ready and
# CoreDNS. Admin kubeconfig: /var/tmp/ktcluster/kubeconfig (https://127.0.0.1:6443).
# Everything started is recorded in /var/tmp/ktcluster/run/*.pid; down.sh undoes it all.
#   KT_SKIP_DNS=1 ./up.sh   - do not deploy CoreDNS
set -euo pipefail
shopt -s extglob
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
T0=$(date +%s)
log() { printf '[up %4ss] %s\n' $(($(date +%s) - T0)) "$*"; }
die() { log "ERROR: $*"; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root"
ETC=$KT_ROOT/etc
mkdir -p "$KT_BIN" "$KT_LOGS" "$KT_RUN" "$KT_PKI" "$ETC" "$KT_ROOT/etcd" "$KT_ROOT/kubelet" \
  "$KT_ROOT/cni/net.d" "$KT_ROOT/cni/ipam" "$KT_ROOT/containerd"
chmod 700 "$KT_PKI" "$KT_ROOT/etcd"

# put FILE < content: replace FILE only when the content differs (kube-proxy exits when its
# config file changes; rewriting identical files would restart it on every up.sh).
put() {
  local t; t=$(mktemp "$1.XXXXXX")
  cat >"$t"
  if cmp -s "$t" "$1"; then rm -f "$t"; else chmod 600 "$t"; mv "$t" "$1"; fi
}

# ---------------------------------------------------------------- 0. Debian packages
"$KT_SRC/../deps.sh" || die "the Debian packages of hack/packages.txt"

# ---------------------------------------------------------------- 1. build (no-op when built)
log "build: $("$KT_SRC/build.sh" bins | tr '\n' ' ')"
echo "$(date -u +%FT%TZ) built $(($(date +%s) - T0))s" >>"$KT_LOGS/up-times.log"

running() { # name [exe]
  local f=$KT_RUN/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  # a binary rebuilt while it runs reads as "PATH (deleted)": still the process we started
  [[ -d /proc/$pid ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(<"$KT_RUN/$1.exe")"?( \(deleted\)) ]]
}

# ---------------------------------------------------------------- 1b. leftovers of a killed cluster
# A cluster whose processes were killed without down.sh leaves stale pid files, pod mounts,
# CNI netns, iptables rules and routes. When none of its processes runs but leftovers exist,
# clean them up first (down.sh needs no running process), then start afresh.
any_running=0
for n in etcd kube-apiserver containerd kubelet kube-proxy; do running "$n" && any_running=1; done
if ((any_running == 0)) && { compgen -G "$KT_RUN/*.pid" >/dev/null || ip link show "$BRIDGE" >/dev/null 2>&1 ||
  findmnt -rn -o TARGET | grep -q "^$KT_ROOT/"; }; then
  log "found leftovers of a cluster that was not shut down; running down.sh first"
  "$KT_SRC/down.sh" >>"$KT_LOGS/down.log" 2>&1 || log "down.sh reported errors (see $KT_LOGS/down.log)"
fi

# ---------------------------------------------------------------- 2. host network (safety first)
DEF_IF=$(ip -4 route show default | awk '{print $5; exit}')
echo "${DEF_IF:-none}" >"$KT_RUN/default-if"
if [[ ! -f $KT_RUN/sysctl.orig ]]; then
  # the last six are set by the kubelet itself (protectKernelDefaults=false); down.sh restores all
  for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables \
    vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$k=$(sysctl -n $k)"
  done >"$KT_RUN/sysctl.orig"
fi
# Unassigned pod / node addresses are dropped locally, never routed out.
ip route replace blackhole "$POD_CIDR"
ip route replace blackhole "$NODE_NET"
# Service CIDR: not a blackhole (a blackhole makes connect() fail before kube-proxy's OUTPUT
# DNAT can rewrite a ClusterIP), but a route into a sink: a veth whose peer sits alone in netns
# ktsink (no addresses, no forwarding), so unassigned ClusterIPs go nowhere.
[[ -e /run/netns/ktsink ]] || ip netns add ktsink
ip link show ktsvc0 >/dev/null 2>&1 || ip link add ktsvc0 type veth peer name ktsvc1 netns ktsink
ip link set ktsvc0 up
ip -n ktsink link set ktsvc1 up
ip route replace "$SVC_CIDR" dev ktsvc0
# Node IP lives on lo (this kernel has no dummy interfaces).
[[ $(ip -4 -o addr show dev lo) == *" $NODE_IP/32 "* ]] || ip addr add "$NODE_IP/32" dev lo
# Belt and braces: forwarded traffic from pods/node net may never go out the uplink.
if [[ -n ${DEF_IF:-} ]]; then
  for src in "$POD_CIDR" "$NODE_NET"; do
    iptables -t mangle -C FORWARD -s "$src" -o "$DEF_IF" -m comment --comment ktcluster-safety -j DROP 2>/dev/null ||
      iptables -t mangle -I FORWARD -s "$src" -o "$DEF_IF" -m comment --comment ktcluster-safety -j DROP
  done
fi
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
# "laptop" netns: a separate network stack that reaches only the apiserver (10.243.1.1:6443)
# over a veth; kt connect/exchange e2e tests can run their client there.
[[ -e /run/netns/ktlaptop ]] || ip netns add ktlaptop
if ! ip link show ktlap0 >/dev/null 2>&1; then
  ip link add ktlap0 type veth peer name ktlap1 netns ktlaptop
  ip addr add 10.243.1.1/30 dev ktlap0
  ip -n ktlaptop addr add 10.243.1.2/30 dev ktlap1
fi
ip link set ktlap0 up
ip -n ktlaptop link set lo up
ip -n ktlaptop link set ktlap1 up
# `ip netns exec ktlaptop` bind-mounts /etc/netns/ktlaptop/* over /etc/*: without these files a client
# in the laptop netns that edits /etc/resolv.conf or /etc/hosts would edit the HOST's files.
mkdir -p /etc/netns/ktlaptop
[[ -f /etc/netns/ktlaptop/resolv.conf ]] || echo "nameserver 10.243.1.1" >/etc/netns/ktlaptop/resolv.conf
[[ -f /etc/netns/ktlaptop/hosts ]] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >/etc/netns/ktlaptop/hosts

# ---------------------------------------------------------------- 3. PKI + kubeconfigs
cd "$KT_PKI"
if [[ ! -f ca.crt ]]; then
  log "generating PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=ktcluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
fi
cert() { # name subject kind(client|server) [subjectAltName]
  local n=$1 subj=$2 kind=$3 san=${4:-}
  [[ -f $n.crt ]] && return 0
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment"
  if [[ $kind == server ]]; then ext+=$'\nextendedKeyUsage=serverAuth'; else ext+=$'\nextendedKeyUsage=clientAuth'; fi
  [[ -n $san ]] && ext+=$'\n'"subjectAltName=$san"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$n.key" -out "$n.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$n.crt" \
    -extfile <(echo "$ext") 2>/dev/null
  rm -f "$n.csr"
}
cert apiserver "/CN=kube-apiserver" server \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$NODE_IP,IP:10.243.1.1,IP:$APISERVER_SVC_IP"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
cert admin "/O=system:masters/CN=kubernetes-admin" client
cert controller-manager "/CN=system:kube-controller-manager" client
cert scheduler "/CN=system:kube-scheduler" client
cert kube-proxy "/CN=system:kube-proxy" client
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" client
cert kubelet-serving "/CN=$NODE_NAME" server "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
chmod 600 ./*.key
cd - >/dev/null

kubeconfig() { # file user server
  put "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ktcluster
  cluster:
    server: $3
    certificate-authority-data: $(base64 -w0 "$KT_PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$KT_PKI/$2.crt")
    client-key-data: $(base64 -w0 "$KT_PKI/$2.key")
contexts:
- name: ktcluster
  context: {cluster: ktcluster, user: $2}
current-context: ktcluster
EOF
}
kubeconfig "$KT_KUBECONFIG" admin https://127.0.0.1:6443
kubeconfig "$KT_ROOT/kubeconfig-laptop" admin https://10.243.1.1:6443
for c in controller-manager scheduler kube-proxy kubelet; do kubeconfig "$ETC/$c.kubeconfig" $c https://127.0.0.1:6443; done

# ---------------------------------------------------------------- 4. config files
put "$ETC/containerd.toml" <<EOF
version = 2
root = "$KT_ROOT/containerd/root"
state = "$KT_ROOT/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$KT_ROOT/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
    stream_server_address = "127.0.0.1"
    # this VM lacks CAP_SYS_RESOURCE: negative oom_score_adj (pause: -998) makes runc fail
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$KT_ROOT/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$KT_ROOT/containerd/certs.d"
EOF
# No registry is reachable: send every pull to a closed local port instead of the network.
for h in _default docker.io registry.k8s.io k8s.gcr.io gcr.io ghcr.io quay.io localhost; do
  mkdir -p "$KT_ROOT/containerd/certs.d/$h"
  put "$KT_ROOT/containerd/certs.d/$h/hosts.toml" <<'EOF'
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
done
put "$KT_ROOT/cni/net.d/10-ktbr.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ktnet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$KT_ROOT/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "${NODE_POD_CIDR%.0/24}.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
put "$ETC/crictl.yaml" <<EOF
runtime-endpoint: unix://$CONTAINERD_SOCK
image-endpoint: unix://$CONTAINERD_SOCK
timeout: 30
EOF
# Pods with dnsPolicy Default get this: no upstream resolver exists (nothing may leave).
printf 'nameserver 127.0.0.1\noptions ndots:1\n' | put "$ETC/resolv.conf"
put "$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $KT_PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $KT_PKI/kubelet-serving.crt
tlsPrivateKeyFile: $KT_PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $ETC/resolv.conf
podLogsDir: $KT_ROOT/kubelet/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 110
EOF
put "$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $ETC/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 30s, minSyncPeriod: 1s}
EOF

# ---------------------------------------------------------------- 5. processes
start() { # name exe args...
  local name=$1 exe=$2; shift 2
  if running "$name"; then log "$name already running (pid $(<"$KT_RUN/$name.pid"))"; return 0; fi
  echo "=== $(date -u +%FT%TZ) start" >>"$KT_LOGS/$name.log"
  setsid "$exe" "$@" >>"$KT_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$KT_RUN/$name.pid"
  date +%s >"$KT_RUN/$name.started"
  readlink -f "$exe" >"$KT_RUN/$name.exe"
  log "started $name (pid $!)"
}
wait_for() { # description timeout-seconds cmd...
  local what=$1 t=$2 i=0; shift 2
  until "$@" >/dev/null 2>&1; do
    ((i++ < t)) || die "timeout waiting for $what"
    sleep 1
  done
  log "$what: ok"
}
KC=(kubectl --kubeconfig "$KT_KUBECONFIG")
# After a warm restart the API still holds the old (stale) statuses, so readiness must be
# newer than the start of the process that reports it.
since() { cat "$KT_RUN/$1.started" 2>/dev/null || echo 0; }
node_ready_fresh() {
  local out st hb
  out=$("${KC[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}') || return 1
  read -r st hb <<<"$out"
  [[ $st == True && -n $hb ]] && (($(date -d "$hb" +%s) >= $(since kubelet)))
}
pods_ready_fresh() { # namespace selector
  local out st at ok=1
  out=$("${KC[@]}" -n "$1" get pods -l "$2" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}') || return 1
  while read -r st at; do
    [[ -n $st ]] || continue
    if [[ $st == True && -n $at ]] && (($(date -d "$at" +%s) >= $(since containerd))); then ok=0; fi
  done <<<"$out"
  return $ok
}

start etcd "$KT_BIN/etcd" --name kt --data-dir "$KT_ROOT/etcd" --logger zap --log-level warn \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "kt=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls http://127.0.0.1:2381
wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start kube-apiserver "$KT_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
  --service-cluster-ip-range="$SVC_CIDR" \
  --client-ca-file="$KT_PKI/ca.crt" \
  --tls-cert-file="$KT_PKI/apiserver.crt" --tls-private-key-file="$KT_PKI/apiserver.key" \
  --kubelet-client-certificate="$KT_PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$KT_PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$KT_PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$KT_PKI/sa.pub" --service-account-signing-key-file="$KT_PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 120 "${KC[@]}" get --raw /readyz

start kube-controller-manager "$KT_BIN/kube-controller-manager" \
  --kubeconfig="$ETC/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$ETC/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$ETC/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SVC_CIDR" \
  --cluster-signing-cert-file="$KT_PKI/ca.crt" --cluster-signing-key-file="$KT_PKI/ca.key" \
  --root-ca-file="$KT_PKI/ca.crt" --service-account-private-key-file="$KT_PKI/sa.key" \
  --use-service-account-credentials=true --profiling=false --v=1
start kube-scheduler "$KT_BIN/kube-scheduler" \
  --kubeconfig="$ETC/scheduler.kubeconfig" \
  --authentication-kubeconfig="$ETC/scheduler.kubeconfig" \
  --authorization-kubeconfig="$ETC/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

start containerd /usr/bin/containerd --config "$ETC/containerd.toml"
wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
"$KT_SRC/build.sh" images

start kubelet "$KT_BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$KT_ROOT/kubelet/root" --v=1
start kube-proxy "$KT_BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1

wait_for "node $NODE_NAME registered" 120 "${KC[@]}" get node "$NODE_NAME"
wait_for "node $NODE_NAME Ready" 180 node_ready_fresh
echo "$(date -u +%FT%TZ) node-ready $(($(date +%s) - T0))s" >>"$KT_LOGS/up-times.log"

if [[ ${KT_SKIP_DNS:-0} != 1 ]]; then
  "${KC[@]}" apply -f "$KT_SRC/manifests/coredns.yaml" >/dev/null
  wait_for "CoreDNS ready" 180 pods_ready_fresh kube-system k8s-app=kube-dns
  echo "$(date -u +%FT%TZ) dns-ready $(($(date +%s) - T0))s" >>"$KT_LOGS/up-times.log"
fi
log "cluster up. export KUBECONFIG=$KT_KUBECONFIG   (kubectl: $KT_BIN/kubectl)"
