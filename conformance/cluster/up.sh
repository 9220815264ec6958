#!/usr/bin/env bash
# Brings up the Skiff local cluster (make cluster):
#   control plane in the host: etcd (127.0.0.1:12379), kube-apiserver
#   (https://10.200.0.1:6443), kube-controller-manager, kube-scheduler;
#   SKIFF_NODES worker nodes (default 2), node N in network namespace
#   skiff-nodeN (node IP 10.200.0.(10+N), pod CIDR 10.244.N.0/24) and its own
#   mount namespace, running containerd, kubelet and kube-proxy;
#   CoreDNS (service 10.96.0.10).
# Kubeconfig: /var/lib/skiff-cluster/kubeconfig (admin). kubectl:
# /var/lib/skiff-cluster/bin/kubectl. Logs: /var/lib/skiff-cluster/logs.
# Idempotent: a healthy cluster of the same shape is reused; anything else is
# torn down (down.sh) and recreated.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

require_root
[[ "$SKIFF_NODES" =~ ^[1-9]$ ]] || die "SKIFF_NODES must be 1..9 (got '$SKIFF_NODES')"

KUBECTL="$K8S_BIN/kubectl"
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# ------------------------------------------------------------------ binaries
# The binaries build (cached in $SKIFF_CACHE) while the packages install.
command -v go >/dev/null || die "go is not on PATH (needed to build Kubernetes and the images)"
ensure_pkgs bc:bc
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
"$here/build-k8s.sh" >"$build_log" 2>&1 &
build_pid=$!

# ---------------------------------------------------------------- preflight
step "preflight (packages, kernel features)"
ensure_pkgs containerd:containerd ctr:containerd runc:runc iptables:iptables conntrack:conntrack \
	busybox:busybox-static openssl:openssl ip:iproute2 nsenter:util-linux unshare:util-linux \
	setsid:util-linux curl:curl
grep -qw overlay /proc/filesystems || die "kernel feature missing: overlayfs (CONFIG_OVERLAY_FS), needed by containerd"
[[ -e /proc/self/ns/net && -e /proc/self/ns/mnt ]] || die "kernel feature missing: network/mount namespaces"
grep -q ' cgroup ' /proc/self/mounts || grep -q ' cgroup2 ' /proc/self/mounts || die "no cgroup file system mounted under /sys/fs/cgroup"
[[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/pids && -d /sys/fs/cgroup/cpu ]] ||
	die "expected cgroup v1 hierarchies (memory, pids, cpu) under /sys/fs/cgroup; this tooling supports cgroup v1 (hybrid) machines"
[[ -d /proc/sys/net/bridge ]] || die "kernel feature missing: br_netfilter (CONFIG_BRIDGE_NETFILTER), needed by kube-proxy for pod-to-service traffic on a bridge"
iptables -t nat -S >/dev/null 2>&1 || die "iptables does not work here (kernel nf_tables/iptables NAT support missing?)"

step "binaries (cached in $SKIFF_CACHE)"
wait "$build_pid" || die "building the binaries failed: $(tail -20 "$build_log")"
step_done
sed 's/^/  /' "$build_log"
step "skiff-images tool"
(cd "$repo" && CGO_ENABLED=0 go build -o "$SKIFF_CACHE/bin/skiff-images" ./conformance/cmd/skiff-images)

# -------------------------------------------------------------- idempotency
healthy() {
	[[ -f "$SKIFF_STATE/shape" && "$(cat "$SKIFF_STATE/shape")" == "nodes=$SKIFF_NODES k8s=$K8S_VERSION maxpods=$MAX_PODS" ]] || return 1
	local f
	for f in "$SKIFF_STATE"/pids/*; do
		[[ -f "$f" && -d "/proc/$(cat "$f")" ]] || return 1
	done
	kc get --raw /readyz >/dev/null 2>&1 || return 1
	local ready
	ready="$(kc get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
	[[ "$ready" -eq "$SKIFF_NODES" ]] || return 1
	kc -n kube-system rollout status deploy/coredns --timeout=5s >/dev/null 2>&1
}
if [[ -d "$SKIFF_STATE" ]]; then
	step "check existing cluster"
	if healthy; then
		step_done
		echo "skiff-cluster: already up and healthy ($SKIFF_NODES nodes); reusing it"
		echo "  export KUBECONFIG=$KUBECONFIG_PATH; kubectl: $SKIFF_STATE/bin/kubectl"
		exit 0
	fi
	step "tear down unhealthy/stale cluster"
	"$here/down.sh" >/dev/null
fi

mkdir -p "$SKIFF_STATE"/{pids,logs,pki,bin,etcd}
echo "nodes=$SKIFF_NODES k8s=$K8S_VERSION maxpods=$MAX_PODS" >"$SKIFF_STATE/shape.pending"
ln -sf "$KUBECTL" "$SKIFF_STATE/bin/kubectl"

# start NAME CMD...: run CMD as a daemon (own session), log to logs/NAME.log,
# record its PID in pids/NAME.
start() {
	local name="$1"
	shift
	setsid "$@" >"$SKIFF_STATE/logs/$name.log" 2>&1 </dev/null &
	echo "$!" >"$SKIFF_STATE/pids/$name"
}
# wait_for WHAT TIMEOUT CMD...: poll CMD until it succeeds.
wait_for() {
	local what="$1" timeout="$2" deadline
	shift 2
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			die "timed out after ${timeout}s waiting for $what (logs: $SKIFF_STATE/logs)"
		fi
		sleep 0.5
	done
}
alive() { [[ -d "/proc/$(cat "$SKIFF_STATE/pids/$1")" ]] || die "$1 exited; see $SKIFF_STATE/logs/$1.log: $(tail -5 "$SKIFF_STATE/logs/$1.log")"; }

# ---------------------------------------------------------------------- PKI
step "certificates and credentials"
pki="$SKIFF_STATE/pki"
(
	cd "$pki"
	ossl() { openssl "$@" >/dev/null 2>&1 || { openssl "$@" || true; die "openssl $1 failed"; }; }
	ossl ecparam -name prime256v1 -genkey -noout -out ca.key
	ossl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=skiff-local-cluster-ca" -out ca.crt
	cert() { # cert NAME SUBJECT [SAN]
		ossl ecparam -name prime256v1 -genkey -noout -out "$1.key"
		ossl req -new -key "$1.key" -subj "$2" -out "$1.csr"
		{
			echo "basicConstraints=CA:FALSE"
			echo "keyUsage=critical,digitalSignature,keyEncipherment"
			if [[ -n "${3:-}" ]]; then
				echo "extendedKeyUsage=serverAuth,clientAuth"
				echo "subjectAltName=$3"
			else
				echo "extendedKeyUsage=clientAuth"
			fi
		} >"$1.ext"
		ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 -extfile "$1.ext" -out "$1.crt"
		rm -f "$1.csr" "$1.ext"
	}
	cert apiserver "/CN=kube-apiserver" \
		"IP:$CP_IP,IP:$KUBE_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	ossl ecparam -name prime256v1 -genkey -noout -out sa.key
	ossl ec -in sa.key -pubout -out sa.pub
	chmod 600 ./*.key
)
tok() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
: >"$pki/tokens.csv"
chmod 600 "$pki/tokens.csv"
# kubeconfig FILE USER UID GROUPS: a token for USER and a kubeconfig using it.
kubeconfig() {
	local t
	t="$(tok)"
	echo "$t,$2,$3,\"$4\"" >>"$pki/tokens.csv"
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: https://$CP_IP:6443
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    token: $t
contexts:
- name: skiff
  context: {cluster: skiff, user: $2}
current-context: skiff
EOF
	chmod 600 "$1"
}
kubeconfig "$KUBECONFIG_PATH" skiff-admin skiff-admin system:masters
kubeconfig "$SKIFF_STATE/controller-manager.kubeconfig" system:kube-controller-manager kcm ""
kubeconfig "$SKIFF_STATE/scheduler.kubeconfig" system:kube-scheduler sched ""
kubeconfig "$SKIFF_STATE/kube-proxy.kubeconfig" system:kube-proxy kube-proxy ""
for i in $(seq 1 "$SKIFF_NODES"); do
	mkdir -p "$SKIFF_STATE/node$i"
	kubeconfig "$SKIFF_STATE/node$i/kubelet.kubeconfig" "system:node:$(node_name "$i")" "node$i" system:nodes
done

# ------------------------------------------------------------------ network
step "network: bridge $BRIDGE, $SKIFF_NODES node namespaces, routes"
ip link add "$BRIDGE" type bridge 2>/dev/null || die "cannot create bridge $BRIDGE (kernel CONFIG_BRIDGE missing, or it exists)"
ip addr add "$CP_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in $(seq 1 "$SKIFF_NODES"); do
	ns="$(node_name "$i")"
	ip netns add "$ns" || die "cannot create network namespace $ns"
	ip link add "skv$i" type veth peer name eth0 netns "$ns" || die "cannot create a veth pair (kernel CONFIG_VETH)"
	ip link set "skv$i" master "$BRIDGE" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.route_localnet=1
	# Like a real machine, a node has a default route: without one the
	# kernel refuses connections to ClusterIPs from hostNetwork pods before
	# kube-proxy's rules can rewrite them.
	ip -n "$ns" route add default via "$CP_IP" dev eth0
	ip route add "$(node_cidr "$i")" via "$(node_ip "$i")" dev "$BRIDGE"
	for j in $(seq 1 "$SKIFF_NODES"); do
		[[ "$j" == "$i" ]] || ip -n "$ns" route add "$(node_cidr "$j")" via "$(node_ip "$j")" dev eth0
	done
done

# ------------------------------------------------------------ control plane
step "etcd"
start etcd "$K8S_BIN/etcd" --name skiff --data-dir "$SKIFF_STATE/etcd" \
	--listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
	--listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
	--initial-cluster skiff=http://127.0.0.1:12380 --listen-metrics-urls "" \
	--unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS http://127.0.0.1:12379/health

step "kube-apiserver"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
	--advertise-address="$CP_IP" --bind-address="$CP_IP" --secure-port=6443 \
	--etcd-servers=http://127.0.0.1:12379 \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
	--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types=InternalIP,Hostname \
	--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
	--token-auth-file="$pki/tokens.csv" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--allow-privileged=true --enable-aggregator-routing=true --v=1
wait_for "kube-apiserver /readyz" 90 kc get --raw /readyz

step "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
	--kubeconfig="$SKIFF_STATE/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$SKIFF_STATE/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$SKIFF_STATE/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false \
	--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
	--use-service-account-credentials=true \
	--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" \
	--kubeconfig="$SKIFF_STATE/scheduler.kubeconfig" \
	--authentication-kubeconfig="$SKIFF_STATE/scheduler.kubeconfig" \
	--authorization-kubeconfig="$SKIFF_STATE/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --v=1

# -------------------------------------------------------------------- nodes
step "node namespaces, cgroups, containerd"
# Host directories that must exist as mount points in the node namespaces;
# remember the ones we create so down.sh removes them again.
for d in /etc/cni/net.d /opt/cni/bin /var/lib/kubelet /var/lib/containerd /var/lib/cni /var/log/pods /var/log/containers; do
	p=""
	IFS=/ read -ra parts <<<"${d#/}"
	for c in "${parts[@]}"; do
		p="$p/$c"
		if [[ ! -d "$p" ]]; then
			mkdir "$p"
			echo "$p" >>"$SKIFF_STATE/created-mountpoints"
		fi
	done
done
mapfile -t cg_mounts < <(awk '$3 == "cgroup" {print $2}' /proc/self/mounts)
: >"$SKIFF_STATE/nodes"
for i in $(seq 1 "$SKIFF_NODES"); do
	name="$(node_name "$i")"
	nd="$SKIFF_STATE/node$i"
	for m in "${cg_mounts[@]}"; do
		mkdir -p "$m/$name/system"
		if [[ -f "$m/cpuset.cpus" ]]; then
			cat "$m/cpuset.cpus" >"$m/$name/cpuset.cpus"
			cat "$m/cpuset.mems" >"$m/$name/cpuset.mems"
			cat "$m/cpuset.cpus" >"$m/$name/system/cpuset.cpus"
			cat "$m/cpuset.mems" >"$m/$name/system/cpuset.mems"
		fi
	done
	mkdir -p "$nd/root/etc/cni/net.d" "$nd/root/opt/cni/bin" "$nd/root/etc/containerd"
	cp "$CNI_BIN_CACHE"/* "$nd/root/opt/cni/bin/"
	cat >"$nd/root/etc/cni/net.d/10-skiff-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "skiff-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(node_cidr "$i")", "gateway": "$(node_gw "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
	cat >"$nd/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
EOF
	# The anchor holds the node's mount namespace (see node-ns.sh).
	rm -f "$nd/ready"
	start "anchor-node$i" nsenter --net="/run/netns/$name" unshare --mount --propagation private -- "$here/node-ns.sh" "$nd"
	echo "$name $nd/root/run/containerd/containerd.sock" >>"$SKIFF_STATE/nodes"
done
for i in $(seq 1 "$SKIFF_NODES"); do
	wait_for "node $i namespaces" 20 test -f "$SKIFF_STATE/node$i/ready"
	alive "anchor-node$i"
	start "containerd-node$i" env SKIFF_NODE_CGROUP=1 "$here/node-exec.sh" "$i" \
		containerd --config "$SKIFF_STATE/node$i/containerd.toml"
done
for i in $(seq 1 "$SKIFF_NODES"); do
	wait_for "containerd on node $i" 30 ctr -a "$SKIFF_STATE/node$i/root/run/containerd/containerd.sock" version
done

# The cluster needs only these; Skiff's own images come with make images.
BASE_IMAGES=registry.k8s.io/pause,skiff.local/echo,skiff.local/toolbox,skiff.local/coredns
step "base images (build and import into every node)"
export SKIFF_CACHE SKIFF_STATE COREDNS_VERSION
(cd "$repo" && "$SKIFF_CACHE/bin/skiff-images" -only "$BASE_IMAGES" >"$SKIFF_STATE/logs/images.log" 2>&1) ||
	die "image build/import failed: $(tail -20 "$SKIFF_STATE/logs/images.log")"

step "kubelet, kube-proxy on each node"
for i in $(seq 1 "$SKIFF_NODES"); do
	name="$(node_name "$i")"
	nd="$SKIFF_STATE/node$i"
	cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$name
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: /var/log/pods
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
maxPods: $MAX_PODS
EOF
	cat >"$nd/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $SKIFF_STATE/kube-proxy.kubeconfig
hostnameOverride: $name
mode: iptables
clusterCIDR: $CLUSTER_CIDR
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 0.0.0.0:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
	start "kubelet-node$i" env SKIFF_NODE_CGROUP=1 "$here/node-exec.sh" "$i" \
		"$K8S_BIN/kubelet" --config="$nd/kubelet.yaml" --kubeconfig="$nd/kubelet.kubeconfig" \
		--node-ip="$(node_ip "$i")" --hostname-override="$name" --v=1
	start "kube-proxy-node$i" env SKIFF_NODE_CGROUP=1 "$here/node-exec.sh" "$i" \
		"$K8S_BIN/kube-proxy" --config="$nd/kube-proxy.yaml" --v=1
done
nodes_ready() {
	[[ "$(kc get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)" -eq "$SKIFF_NODES" ]]
}
wait_for "$SKIFF_NODES nodes Ready" 120 nodes_ready
for i in $(seq 1 "$SKIFF_NODES"); do
	alive "kubelet-node$i"
	alive "kube-proxy-node$i"
done

step "CoreDNS"
sed -e "s/@DNS_SVC_IP@/$DNS_SVC_IP/g" -e "s/@COREDNS_VERSION@/$COREDNS_VERSION/g" \
	-e "s/@CLUSTER_DOMAIN@/$CLUSTER_DOMAIN/g" "$here/coredns.yaml" | kc apply -f - >/dev/null
kc -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null ||
	die "CoreDNS did not become ready: $(kc -n kube-system get pods -o wide 2>&1)"

mv "$SKIFF_STATE/shape.pending" "$SKIFF_STATE/shape"
step_done
cat <<EOF
skiff-cluster: up: $SKIFF_NODES nodes, Kubernetes $K8S_VERSION
  export KUBECONFIG=$KUBECONFIG_PATH
  kubectl:   $SKIFF_STATE/bin/kubectl
  node shell: $here/node-exec.sh <N> <command>    (e.g. crictl/ctr/ip inside node N)
  logs:      $SKIFF_STATE/logs
  tear down: $here/down.sh
EOF
