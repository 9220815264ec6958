#!/usr/bin/env bash
# make demo: Skiff on the local cluster with real traffic.
#
# Brings up the local cluster (or reuses it), installs Skiff from its Helm
# charts, deploys a small app, enrols its namespace with
# istio.io/dataplane-mode=ambient while it runs, and shows what the mesh does:
# mutual TLS between SPIFFE identities (metrics, access logs, and the wire),
# the app still seeing its real callers, and an AuthorizationPolicy at work.
# Leaves everything running; `make cluster-down` removes it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="$repo/conformance/cluster"
# shellcheck source=../cluster/lib.sh
source "$cluster/lib.sh"
require_root
ensure_pkgs tcpdump:tcpdump

bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'
[[ -t 1 ]] || bold="" dim="" reset=""
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; }
k() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
kshow() {
	show "kubectl $*"
	k "$@"
}

say "1. A local Kubernetes cluster: real control plane, two nodes (make cluster)"
"$cluster/up.sh"

say "2. Skiff installed from its Helm charts (base, istiod, cni, ztunnel)"
"$cluster/install-skiff.sh"
kshow -n istio-system get pods -o wide

say "3. An app that is not in the mesh yet"
k delete namespace demo legacy --ignore-not-found --wait=true --timeout=120s >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: demo}
YAML
(cd "$repo" && go run ./conformance/internal/kubetest/manifest echo demo 2 echo) | k apply -f - >/dev/null
(cd "$repo" && go run ./conformance/internal/kubetest/manifest client demo skiff-node1 client) | k apply -f - >/dev/null
(cd "$repo" && go run ./conformance/internal/kubetest/manifest client legacy skiff-node1) | k apply -f - >/dev/null
k -n demo rollout status deploy/echo --timeout=180s >/dev/null
k -n demo wait --for=condition=Ready pod/client --timeout=180s >/dev/null
k -n legacy wait --for=condition=Ready pod/client --timeout=180s >/dev/null
kshow -n demo get pods -o wide

say "4. Enrol the running app: one label, no restart"
kshow label namespace demo istio.io/dataplane-mode=ambient
for _ in $(seq 60); do
	n="$(k -n demo get pods -o jsonpath='{range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{"\n"}{end}' | grep -c enabled || true)"
	[[ "$n" -eq 3 ]] && break
	sleep 1
done
show "kubectl -n demo get pods -o custom-columns=POD:.metadata.name,NODE:.spec.nodeName,REDIRECTION:..."
k -n demo get pods -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,REDIRECTION:.metadata.annotations.ambient\.istio\.io/redirection'

say "5. Traffic through the mesh: client -> http://echo (two replicas on two nodes)"
client_ip="$(k -n demo get pod client -o jsonpath='{.status.podIP}')"
echo "client pod IP: $client_ip"
for i in 1 2 3 4; do
	show "kubectl -n demo exec client -- echo-app get http://echo/hello"
	k -n demo exec client -- echo-app get http://echo/hello | grep -E '^(pod|node|remote)=' | paste -sd' '
done
echo "The app still sees the client's own address (remote=$client_ip:...), as without the mesh."

say "6. Every connection is mutual TLS between SPIFFE identities (ztunnel's Istio metrics)"
for n in $(k -n istio-system get pods -l app=ztunnel -o jsonpath='{.items[*].metadata.name}'); do
	node="$(k -n istio-system get pod "$n" -o jsonpath='{.spec.nodeName}')"
	echo "ztunnel on $node:"
	k get --raw "/api/v1/namespaces/istio-system/pods/$n:15020/proxy/metrics" |
		grep '^istio_tcp_connections_opened_total' | grep 'ns/demo/' |
		sed -E 's/.*(reporter="[^"]*").*(source_principal="[^"]*").*/  \1 \2/; t; d' | sort -u || true
	k get --raw "/api/v1/namespaces/istio-system/pods/$n:15020/proxy/metrics" |
		grep '^istio_tcp_connections_opened_total' | grep 'ns/demo/' |
		grep -o 'connection_security_policy="[^"]*"\|destination_principal="[^"]*"' | sort -u | sed 's/^/  /' || true
done

say "7. On the wire between the nodes: only TLS on port 15008"
show "node-exec.sh 2 tcpdump -i eth0 -A 'tcp port 15008'   (while the client sends GET /secret-path)"
cap="$(mktemp)"
"$cluster/node-exec.sh" 2 timeout 4 tcpdump -i eth0 -nn -A -s0 'tcp port 15008' >"$cap" 2>/dev/null &
sleep 1
echo2="$(k -n demo get pods -l app=echo -o jsonpath='{range .items[*]}{.status.podIP} {.spec.nodeName}{"\n"}{end}' | awk '$2=="skiff-node2"{print $1; exit}')"
k -n demo exec client -- echo-app get "http://$echo2:8080/secret-path" >/dev/null
wait || true
packets="$(grep -c ' IP ' "$cap" || true)"
if grep -q 'secret-path' "$cap"; then
	echo "  UNEXPECTED: the request was visible in clear text"
else
	echo "  $packets packets on port 15008, the request path nowhere in them: encrypted."
fi
rm -f "$cap"

say "8. Policy: an AuthorizationPolicy denies the client's identity"
cat <<YAML | tee /dev/stderr | k apply -f - >/dev/null
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
YAML
for _ in $(seq 30); do
	k -n demo exec client -- echo-app get -timeout 2s http://echo/ >/dev/null 2>&1 || break
	sleep 1
done
show "kubectl -n demo exec client -- echo-app get http://echo/"
k -n demo exec client -- echo-app get -timeout 2s http://echo/ 2>&1 | sed 's/^/  /' || echo "  -> refused by policy"
show "kubectl -n legacy exec client -- echo-app get http://echo.demo/   (a caller the policy does not name)"
k -n legacy exec client -- echo-app get http://echo.demo/ | grep -E '^(pod|remote)=' | paste -sd' '
kshow -n demo delete authorizationpolicy deny-client
for _ in $(seq 30); do
	k -n demo exec client -- echo-app get -timeout 2s http://echo/ >/dev/null 2>&1 && break
	sleep 1
done
k -n demo exec client -- echo-app get http://echo/ | grep -E '^(pod|remote)=' | paste -sd' '

say "9. Access logs: one line per connection, with both identities"
k -n istio-system logs -l app=ztunnel --tail=200 --prefix | grep -i 'ns/demo' | tail -3 || true

cat <<EOT

${bold}Done.${reset} Skiff is running on the local cluster:
  export KUBECONFIG=$KUBECONFIG_PATH
  $SKIFF_STATE/bin/kubectl -n demo exec client -- echo-app get http://echo/
  make cluster-down      # remove everything
EOT
