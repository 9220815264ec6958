#!/bin/sh
# Copies the Gateway API experimental-channel CRDs Skiff uses from the
# module version that go.mod requires, so the embedded manifests match the
# Go types, which carry the experimental fields too: HTTPRoute's retry,
# which the waypoint applies, is one that the standard channel lacks.
set -eu
dir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/experimental"
for k in gatewayclasses gateways httproutes grpcroutes referencegrants; do
	f="gateway.networking.k8s.io_$k.yaml"
	cp "$dir/$f" "crds/$f"
	chmod 0644 "crds/$f"
done
