# shellcheck shell=bash disable=SC2034
# Common settings and helpers for the Skiff local cluster scripts.
# Sourced by up.sh, down.sh, build-k8s.sh; not executable on its own.

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.9.1}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
SKIFF_NODES="${SKIFF_NODES:-2}"

SKIFF_CACHE="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
K8S_BIN="${SKIFF_CACHE}/k8s-${K8S_VERSION}/bin"
CNI_BIN_CACHE="${SKIFF_CACHE}/cni-plugins-${CNI_PLUGINS_VERSION}/bin"
COREDNS_BIN_CACHE="${SKIFF_CACHE}/coredns-${COREDNS_VERSION}/bin"
HELM_BIN_CACHE="${SKIFF_CACHE}/helm-${HELM_VERSION}/bin"

# Everything the running cluster creates lives under this directory.
SKIFF_STATE="${SKIFF_STATE:-/var/lib/skiff-cluster}"
KUBECONFIG_PATH="${SKIFF_STATE}/kubeconfig"

# Addressing. Host bridge skiff0 holds 10.200.0.1 (apiserver); node i is
# 10.200.0.(10+i) in netns skiff-node<i>, pod CIDR 10.244.<i>.0/24.
BRIDGE=skiff0
CP_IP=10.200.0.1
SERVICE_CIDR=10.96.0.0/16
KUBE_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_CIDR=10.244.0.0/16
CLUSTER_DOMAIN=cluster.local
# Pods a node runs: make bench-footprint keeps 100 of its own per node and
# replaces them while others start; a node's /24 has room for 253.
MAX_PODS=200

node_ip() { echo "10.200.0.$((10 + $1))"; }
node_cidr() { echo "10.244.$1.0/24"; }
node_gw() { echo "10.244.$1.1"; }
node_name() { echo "skiff-node$1"; }

_step_name=""
_step_start=0
_t0=$(date +%s.%N)
# step NAME: start a step; the previous one (if any) is closed and printed.
step() {
	step_done
	_step_name="$1"
	_step_start=$(date +%s.%N)
}
step_done() {
	if [[ -n "$_step_name" ]]; then
		printf '[%6.1fs] %-48s %5.1fs\n' \
			"$(echo "$(date +%s.%N) - $_t0" | bc)" "$_step_name" \
			"$(echo "$(date +%s.%N) - $_step_start" | bc)"
		_step_name=""
	fi
}
die() {
	echo "skiff-cluster: error: $*" >&2
	exit 1
}
log() { echo "skiff-cluster: $*" >&2; }

require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces, mounts and cgroups); try: sudo $0"
}

# ensure_pkgs CMD:PKG ...: apt-get install the packages whose command is missing.
ensure_pkgs() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	if ((${#missing[@]})); then
		log "installing ${missing[*]} with apt-get"
		if [[ ! -f /var/lib/skiff-apt-updated ]] || [[ -n "${SKIFF_APT_UPDATE:-}" ]]; then
			DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
			touch /var/lib/skiff-apt-updated
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			die "apt-get install ${missing[*]} failed"
	fi
}
