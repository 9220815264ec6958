#!/usr/bin/env bash
# Builds the Kubernetes binaries (from the Go module proxy), etcd, the CNI
# reference plugins, CoreDNS and helm into a cache keyed by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/skiff/k8s-<version>/bin
# Binaries already present are not rebuilt. Usage: build-k8s.sh [-f]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

force=""
[[ "${1:-}" == "-f" ]] && force=1
command -v go >/dev/null || die "go is not on PATH"
command -v bc >/dev/null || ensure_pkgs bc:bc

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
ver="${K8S_VERSION#v}"
major="${ver%%.*}"
minor="${ver#*.}"
minor="${minor%%.*}"

wrap="${SKIFF_CACHE}/k8s-${K8S_VERSION}/src"
mkdir -p "$wrap" "$K8S_BIN"

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
need=()
for b in "${k8s_bins[@]}"; do
	[[ -z "$force" && -x "$K8S_BIN/$b" ]] || need+=("$b")
done

# The rest builds in the background while Kubernetes compiles: their module
# downloads and single-threaded links fill the cores the big build leaves idle.
build_others() {
	if [[ -n "$force" || ! -x "$K8S_BIN/etcd" ]]; then
		step "build etcd ${ETCD_VERSION}"
		ewrap="${SKIFF_CACHE}/etcd-${ETCD_VERSION}/src"
		mkdir -p "$ewrap"
		if [[ ! -f "$ewrap/go.sum" ]]; then
			printf 'module skiff.local/etcdwrap\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$ewrap/go.mod"
			printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$ewrap/tools.go"
			(cd "$ewrap" && go mod tidy >/dev/null 2>&1) || die "etcd wrapper: go mod tidy failed"
		fi
		(cd "$ewrap" && go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
		mv "$K8S_BIN/etcd.tmp" "$K8S_BIN/etcd"
	fi

	if [[ -n "$force" || ! -x "$CNI_BIN_CACHE/bridge" || ! -x "$CNI_BIN_CACHE/host-local" || ! -x "$CNI_BIN_CACHE/loopback" || ! -x "$CNI_BIN_CACHE/portmap" ]]; then
		step "build CNI plugins ${CNI_PLUGINS_VERSION}"
		mkdir -p "$CNI_BIN_CACHE"
		GOBIN="$CNI_BIN_CACHE" go install -trimpath -ldflags "-s -w" \
			"github.com/containernetworking/plugins/plugins/main/bridge@${CNI_PLUGINS_VERSION}" \
			"github.com/containernetworking/plugins/plugins/ipam/host-local@${CNI_PLUGINS_VERSION}" \
			"github.com/containernetworking/plugins/plugins/main/loopback@${CNI_PLUGINS_VERSION}" \
			"github.com/containernetworking/plugins/plugins/meta/portmap@${CNI_PLUGINS_VERSION}"
	fi

	if [[ -n "$force" || ! -x "$COREDNS_BIN_CACHE/coredns" ]]; then
		step "build coredns ${COREDNS_VERSION}"
		# CoreDNS with only the plugins coredns.yaml's Corefile uses, as
		# CoreDNS documents for custom builds: the full set also compiles
		# the cloud providers' SDKs (a 76 MB binary, against 52 MB).
		cwrap="${SKIFF_CACHE}/coredns-${COREDNS_VERSION}/src"
		mkdir -p "$cwrap" "$COREDNS_BIN_CACHE"
		if [[ ! -f "$cwrap/go.sum" ]]; then
			printf 'module skiff.local/corednswrap\n\ngo 1.24\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$cwrap/go.mod"
			{
				echo 'package main'
				echo
				echo 'import ('
				echo '	"github.com/coredns/coredns/coremain"'
				for p in cache errors health kubernetes loadbalance loop metrics ready reload; do
					echo "	_ \"github.com/coredns/coredns/plugin/$p\""
				done
				echo ')'
				echo
				echo 'func main() { coremain.Run() }'
			} >"$cwrap/main.go"
			(cd "$cwrap" && go mod tidy >/dev/null 2>&1) || die "coredns wrapper: go mod tidy failed"
		fi
		(cd "$cwrap" && go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN_CACHE/coredns.tmp" .)
		mv "$COREDNS_BIN_CACHE/coredns.tmp" "$COREDNS_BIN_CACHE/coredns"
	fi
	if [[ -n "$force" || ! -x "$HELM_BIN_CACHE/helm" ]]; then
		step "build helm ${HELM_VERSION}"
		mkdir -p "$HELM_BIN_CACHE"
		GOBIN="$HELM_BIN_CACHE" go install -trimpath \
			-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
			"helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
	fi
	step_done
}
others_log="$(mktemp)"
trap 'rm -f "$others_log"' EXIT
build_others >"$others_log" 2>&1 &
others_pid=$!

if ((${#need[@]})); then
	step "k8s wrapper module (${K8S_VERSION})"
	if [[ ! -f "$wrap/go.sum" || -n "$force" ]]; then
		modfile="$(cd /tmp && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
		[[ -f "$modfile" ]] || die "cannot download k8s.io/kubernetes@${K8S_VERSION}"
		{
			echo "module skiff.local/k8swrap"
			echo
			echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
			echo
			echo "require k8s.io/kubernetes ${K8S_VERSION}"
			echo
			sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/k8s.io/.*#replace \1 => \1 v0.'"${ver#*.}"'#p' "$modfile"
		} >"$wrap/go.mod"
		cat >"$wrap/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
		(cd "$wrap" && go mod tidy -e >/dev/null 2>"$wrap/tidy.log") || { cat "$wrap/tidy.log" >&2; die "go mod tidy failed"; }
	fi
	ldflags="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=${major} -X $p.gitMinor=${minor}"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	# One go build for all of them: the packages they share compile once
	# and the links run side by side.
	step "build ${need[*]}"
	pkgs=()
	for b in "${need[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	out="$K8S_BIN/.build"
	rm -rf "$out" && mkdir -p "$out"
	(cd "$wrap" && go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
	for b in "${need[@]}"; do mv "$out/$b" "$K8S_BIN/$b"; done
	rmdir "$out"
fi

step_done
wait "$others_pid" || { cat "$others_log" >&2; die "building etcd, the CNI plugins, CoreDNS or helm failed"; }
cat "$others_log"
