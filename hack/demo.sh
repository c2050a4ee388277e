#!/usr/bin/env bash
# demo.sh - show kubectl kt's main job on the local test cluster: a "laptop" (network namespace
# ktlaptop, which reaches only the API server) runs `kubectl kt connect`, then curls a Service by
# its cluster DNS name, and everything is restored afterwards. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=/var/tmp/ktcluster/kubeconfig PATH=/var/tmp/ktcluster/bin:$PATH
LAPTOP=(ip netns exec ktlaptop)
KT=(bin/kubectl-kt --kubeconfig /var/tmp/ktcluster/kubeconfig-laptop)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Deploy a sample app: Deployment and Service 'hello' in namespace 'demo'"
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - {name: hello, image: localhost/kt/testapp:e2e, args: [serve, -http, ":8080", -name, hello-in-the-cluster]}
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
YAML
kubectl -n demo rollout status deploy/hello --timeout=120s

say "Without kt, the laptop cannot reach the cluster"
"${LAPTOP[@]}" curl -sS -m 3 http://hello.demo/ || echo "(as expected)"

say "kubectl kt version"
"${LAPTOP[@]}" "${KT[@]}" version

say "kubectl kt connect -n demo   (in the background)"
log=$(mktemp)
"${LAPTOP[@]}" "${KT[@]}" -n demo connect >"$log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q Connected "$log" && break; sleep 0.5; done
cat "$log"

say "curl http://hello.demo  (a Service by its cluster DNS name, from the laptop)"
"${LAPTOP[@]}" curl -sS -m 10 http://hello.demo/from-my-laptop
say "curl http://hello  (short name: the namespace connected to is in the search list)"
"${LAPTOP[@]}" curl -sS -m 10 http://hello/short-name

say "Ctrl-C: connect restores routes and DNS and deletes its shadow pod"
kill -INT $pid
wait $pid || true
trap - EXIT
tail -1 "$log"
rm -f "$log"
"${LAPTOP[@]}" ip route
kubectl get pods -A -l app.kubernetes.io/managed-by=kubectl-kt
kubectl delete namespace demo --wait=false >/dev/null
echo
echo "demo done"
