#!/bin/sh
# Copies the Gateway API standard-channel CRDs Skiff uses from the module
# version that go.mod requires, so the embedded manifests match the Go types.
set -eu
dir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard"
for k in gatewayclasses gateways httproutes grpcroutes referencegrants; do
	f="gateway.networking.k8s.io_$k.yaml"
	cp "$dir/$f" "crds/$f"
	chmod 0644 "crds/$f"
done
