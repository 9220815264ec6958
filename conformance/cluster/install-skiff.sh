#!/usr/bin/env bash
# Installs (or upgrades) Skiff on the local cluster from this checkout: builds
# Skiff's images and loads them into every node, then installs the Helm
# charts in Istio's order for ambient mode (base, istiod, cni, ztunnel) into
# istio-system. Pods are rolled when the images changed (waypoints are
# deployed by istiod-lite: existing ones keep their pods).
#   conformance/cluster/install-skiff.sh [extra helm flags for every release]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
require_root
[[ -f "$KUBECONFIG_PATH" ]] || die "the local cluster is not up (make cluster)"
HELM="$HELM_BIN_CACHE/helm"
[[ -x "$HELM" ]] || "$here/build-k8s.sh"

images=(skiff.local/istiod-lite:dev skiff.local/ztunnel:dev skiff.local/cni:dev skiff.local/waypoint:dev)
step "Skiff images (build and import into every node)"
(cd "$repo" && go run ./conformance/cmd/skiff-images -only "$(
	IFS=,
	echo "${images[*]}"
)" >"$SKIFF_STATE/logs/skiff-images.log" 2>&1) ||
	die "image build failed: $(tail -20 "$SKIFF_STATE/logs/skiff-images.log")"

# The images keep their :dev tag; an annotation that follows their content
# makes Helm roll the pods onto a new build.
build="$(for im in "${images[@]}"; do cat "$SKIFF_CACHE/images/$(echo "$im" | tr '/:' '__').oci.tar"; done | sha256sum | cut -c1-16)"

# Helm installs CRDs but never upgrades them: apply this checkout's, so that
# a cluster set up by an older checkout gets the new fields.
step "CRDs (kubectl apply --server-side)"
"$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply --server-side --force-conflicts -f "$repo/helm/base/crds/" >/dev/null ||
	die "applying the CRDs failed"

for r in istio-base:base istiod:istiod istio-cni:cni ztunnel:ztunnel; do
	name="${r%%:*}" chart="${r#*:}"
	step "helm upgrade --install $name"
	annotation=()
	case "$chart" in
	istiod) annotation=(--set-string "pilot.podAnnotations.skiff\.dev/build=$build") ;;
	cni | ztunnel) annotation=(--set-string "podAnnotations.skiff\.dev/build=$build") ;;
	esac
	if ! out="$("$HELM" upgrade --install "$name" "$repo/helm/$chart" --namespace istio-system --create-namespace \
		--kubeconfig "$KUBECONFIG_PATH" --wait --timeout 5m "${annotation[@]}" "$@" 2>&1)"; then
		"$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" -n istio-system get pods -o wide >&2 || true
		die "helm upgrade --install $name: $out"
	fi
done
step_done
echo "skiff: installed in istio-system (build $build)"
