# Skiff — build, test, lint and benchmark targets.
# Every target installs the tools it needs (Go tools with `go install`,
# Debian packages with apt-get), so each works on a fresh machine.

SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
BIN := bin

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(GOBIN)/staticcheck

# Packages with tests that need root (network namespaces, nftables) or a
# cluster skip themselves with a clear message when they cannot run.
GO_TEST_FLAGS ?= -race -count=1 -timeout 30m

# Nested modules keep heavy test-only dependencies (Istio) out of go.mod.
INTEROP_MODULE := conformance/interop/istio

.PHONY: all build test test-unit test-interop lint fmt vet staticcheck bench bench-hbone fuzz clean generate bench-control-plane

all: build

## build: every binary into bin/
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./...

## test: unit, integration and end-to-end tests (the race detector on), the
## Gateway API mesh conformance suite, and the reliability suite (short profile)
test: test-unit test-interop test-e2e test-conformance test-reliability

test-unit: k8s-bin ratelimit-bin h2spec-bin
	$(GO) test $(GO_TEST_FLAGS) ./...

## ratelimit-bin: Envoy's rate-limit service (github.com/envoyproxy/ratelimit,
## built once and cached by version) and Debian's redis-server, which the
## waypoint's global rate-limit tests run for real
RATELIMIT_VERSION ?= v1.4.1-0.20260122083618-3fb702589d36
SKIFF_RATELIMIT_BIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff/ratelimit-$(RATELIMIT_VERSION)/service_cmd
export SKIFF_RATELIMIT_BIN
.PHONY: ratelimit-bin
ratelimit-bin:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@test -x $(SKIFF_RATELIMIT_BIN) || GOBIN=$(dir $(SKIFF_RATELIMIT_BIN)) $(GO) install github.com/envoyproxy/ratelimit/src/service_cmd@$(RATELIMIT_VERSION)

## h2spec-bin: h2spec, the HTTP/2 conformance suite (github.com/summerwind/h2spec,
## built once and cached by version), which pkg/hbone's TestH2Spec runs
H2SPEC_VERSION ?= v2.2.1+incompatible
SKIFF_H2SPEC_BIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff/h2spec-$(H2SPEC_VERSION)/h2spec
export SKIFF_H2SPEC_BIN
.PHONY: h2spec-bin
h2spec-bin:
	@test -x $(SKIFF_H2SPEC_BIN) || GOBIN=$(dir $(SKIFF_H2SPEC_BIN)) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

## k8s-bin: Kubernetes, etcd, the CNI plugins, CoreDNS and helm, built once and
## cached by version (conformance/cluster/build-k8s.sh); kube-apiserver and etcd
## are exported to every test as KUBEBUILDER_ASSETS (envtest)
K8S_VERSION ?= v1.36.3
KUBEBUILDER_ASSETS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff/k8s-$(K8S_VERSION)/bin
export KUBEBUILDER_ASSETS
# The CNI reference plugins (bridge, host-local, ...), built and cached by the
# same script; the CNI end-to-end test (cni/e2e_test.go) runs them.
CNI_PLUGINS_VERSION ?= v1.9.1
SKIFF_CNI_PLUGINS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff/cni-plugins-$(CNI_PLUGINS_VERSION)/bin
export SKIFF_CNI_PLUGINS
.PHONY: k8s-bin
k8s-bin:
	K8S_VERSION=$(K8S_VERSION) bash conformance/cluster/build-k8s.sh

## test-interop: Istio's Go HBONE client and server against Skiff's
test-interop:
	cd $(INTEROP_MODULE) && $(GO) test $(GO_TEST_FLAGS) ./...

## generate: regenerate the committed protobuf code and CRD manifests
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
CONTROLLER_GEN_VERSION := v0.23.0
generate:
	@command -v protoc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; }
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(GOBIN)/protoc-gen-go-grpc || $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@test -x $(GOBIN)/controller-gen || $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	PATH="$(GOBIN):$$PATH" $(GO) generate ./pkg/xds/... ./pkg/identity/caclient/... ./pkg/apis/...

## conformance: the official Gateway API conformance suite (v1.6.3, profiles
## MESH-HTTP and MESH-GRPC) against Skiff on the local cluster (brought up or
## reused); the report goes to conformance/reports/
CONFORMANCE_MODULE := conformance/gatewayapi
.PHONY: conformance
conformance:
	cd $(CONFORMANCE_MODULE) && SKIFF_E2E=1 $(GO) test -count=1 -v -timeout 60m .

# test-conformance: the same for make test, its report kept out of the tree
CONFORMANCE_SCRATCH := $(or $(TMPDIR),/tmp)/skiff-conformance
.PHONY: test-conformance
test-conformance:
	mkdir -p $(CONFORMANCE_SCRATCH)
	cd $(CONFORMANCE_MODULE) && SKIFF_E2E=1 SKIFF_CONFORMANCE_REPORT=$(CONFORMANCE_SCRATCH)/skiff-mesh-report.yaml $(GO) test -count=1 -v -timeout 60m .

## test-e2e: the local cluster's smoke test, then Skiff installed from its charts
## on it with real traffic (brings the cluster up or reuses it, and leaves it up)
.PHONY: test-e2e
test-e2e:
	SKIFF_E2E=1 SKIFF_NODES=$(NODES) $(GO) test -p 1 -count=1 -timeout 40m -v ./conformance/cluster ./conformance/mesh

## reliability: the reliability suite (issue 14, conformance/reliability) on
## the local cluster with Skiff installed from its charts: faults under real
## traffic; the test log goes to stderr and RELIABILITY_LOG, and one line per
## scenario (result, time, figure) to stdout
RELIABILITY_LOG ?= $(or $(TMPDIR),/tmp)/skiff-reliability.log
RELIABILITY_PROFILE ?= full
.PHONY: reliability
reliability:
	@set -o pipefail; SKIFF_E2E=1 SKIFF_RELIABILITY_PROFILE=$(RELIABILITY_PROFILE) $(GO) test -count=1 -v -timeout 60m ./conformance/reliability 2>&1 | tee $(RELIABILITY_LOG) >&2; rc=$$?; \
	awk '/: figure: /{ sub(/.*: figure: /, ""); n = $$1; sub(/:$$/, "", n); sub(/^[^ ]+ /, ""); fig[n] = $$0 } \
	  /^--- (PASS|FAIL|SKIP)/{ n = $$3; sub(/:$$/, "", n); r = $$2; sub(/:$$/, "", r); printf "%-4s %-28s %-10s %s\n", r, n, $$4, fig[n] }' $(RELIABILITY_LOG); \
	exit $$rc

# test-reliability: the same suite for make test, in its short profile: every
# scenario and pass bar, with shorter loads and outages
.PHONY: test-reliability
test-reliability:
	@$(MAKE) --no-print-directory reliability RELIABILITY_PROFILE=short

## Local cluster (conformance/cluster): real etcd, kube-apiserver, controller
## manager, scheduler, CoreDNS, and NODES worker nodes (own netns, containerd,
## kubelet, kube-proxy). Kubeconfig: /var/lib/skiff-cluster/kubeconfig.
NODES ?= 2

## demo: Skiff on the local cluster with real traffic, showing what the mesh does
.PHONY: demo
demo:
	conformance/demo/demo.sh

## cluster: bring the local cluster up (idempotent: a healthy one is reused)
.PHONY: cluster cluster-down images
cluster:
	SKIFF_NODES=$(NODES) conformance/cluster/up.sh

## cluster-down: stop everything the cluster started and remove what it created
cluster-down:
	conformance/cluster/down.sh

## images: rebuild the images and load them into every node (ISTIO=1 adds Istio's echo app)
images:
	$(GO) run ./conformance/cmd/skiff-images $(if $(ISTIO),-istio)

## lint: gofmt, go vet and staticcheck
lint: fmt vet staticcheck

fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd $(INTEROP_MODULE) && $(GO) vet ./...
	cd $(CONFORMANCE_MODULE) && $(GO) vet ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...
	cd $(INTEROP_MODULE) && $(STATICCHECK) ./...
	cd $(CONFORMANCE_MODULE) && $(STATICCHECK) ./...

## fuzz: run every fuzz target briefly (FUZZTIME per target)
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: every benchmark, Skiff beside its peers
bench: bench-hbone

BENCHTIME ?= 2s

## bench-hbone: plain TCP, HBONE over TCP, HBONE over QUIC and stunnel, with
## ratios (throughput, CPU per GB, latency, memory per stream); then HBONE over
## TCP and over QUIC on a path with 10 ms RTT and 1 % loss between two network
## namespaces (needs root): first byte on a new connection, and the p99 of 50
## small streams sharing a connection with a bulk transfer
bench-hbone:
	@command -v stunnel4 >/dev/null && command -v ip >/dev/null && command -v tc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 iproute2; }
	$(GO) test -run '^$$' -bench '^BenchmarkPaths$$' -benchtime $(BENCHTIME) ./pkg/hbone/
	$(GO) test -run '^$$' -bench '^BenchmarkLossyPath$$' -benchtime 1x ./pkg/hbone/

## bench-control-plane: istiod-lite with 10,000 pods, 1,000 services and 100
## simulated ztunnels on a real apiserver: full-state time, update p99, RSS, CSRs/s
bench: bench-control-plane
bench-control-plane: k8s-bin
	$(GO) test -run '^$$' -bench '^BenchmarkControlPlane$$' -benchtime 1x -timeout 30m ./istiod-lite/internal/bench/

clean:
	rm -rf $(BIN)

## bench-ztunnel: pod to pod across two nodes (real network namespaces), direct,
## through a stunnel4 pair and through two ztunnels: throughput, p50/p99 at
## 1,000 req/s, ztunnel CPU, idle RSS with 100 workloads, RSS per connection
bench: bench-ztunnel
bench-ztunnel: ztunnel-tools
	$(GO) test -run '^$$' -bench '^BenchmarkZtunnel$$' -benchtime $(BENCHTIME) -timeout 30m ./ztunnel/

## ztunnel-tools: stunnel4 and haproxy (benchmark peers) and tcpdump (ztunnel's wire-capture test)
.PHONY: ztunnel-tools bench-ztunnel
ztunnel-tools:
	@command -v stunnel4 >/dev/null && command -v haproxy >/dev/null && command -v tcpdump >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 haproxy tcpdump; }
test-unit: ztunnel-tools

## bench-cni: in-pod rule installation per new pod, Skiff's nftables over
## netlink beside Istio's iptables-restore (nft and legacy backends); CNI ADD
## latency of bridge + host-local alone and with skiff-cni chained; with ratios
.PHONY: bench-cni
bench: bench-cni
bench-cni: k8s-bin
	@command -v iptables-nft-restore >/dev/null && command -v iptables-legacy-restore >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; }
	$(GO) test -run '^$$' -bench '^BenchmarkPodRules$$' -benchtime 500x ./pkg/inpod/
	$(GO) test -run '^$$' -bench '^BenchmarkChainADD$$' -benchtime 100x ./cni/

## bench-footprint: what Skiff costs on every node of the local cluster, with
## Skiff installed from its charts: RSS, anonymous RSS, cgroup memory,
## goroutines, fds and network-namespace handles of ztunnel, the CNI node agent
## and istiod-lite at 0, 10 and 100 enrolled pods per node, and their growth over
## FOOTPRINT_CHURN of pods replaced under traffic, repeated FOOTPRINT_ROUNDS
## times (issue 17's targets); the test log goes to stderr, the report to stdout
FOOTPRINT_CHURN ?= 10m
FOOTPRINT_ROUNDS ?= 1
FOOTPRINT_REPORT := $(or $(TMPDIR),/tmp)/skiff-footprint.txt
.PHONY: bench-footprint
bench-footprint:
	@rm -f $(FOOTPRINT_REPORT)
	@SKIFF_E2E=1 SKIFF_FOOTPRINT_CHURN=$(FOOTPRINT_CHURN) SKIFF_FOOTPRINT_ROUNDS=$(FOOTPRINT_ROUNDS) SKIFF_FOOTPRINT_REPORT=$(FOOTPRINT_REPORT) \
	  $(GO) test -count=1 -v -timeout 90m ./conformance/footprint >&2; rc=$$?; \
	  cat $(FOOTPRINT_REPORT) 2>/dev/null; exit $$rc

## bench-waypoint: the waypoint beside HAProxy and nginx, each on one core, the
## same nginx origin behind each, driven by h2load (HTTP/1.1 keep-alive and h2,
## 1 KB responses): req/s, CPU per request, p50/p99 at 1,000 req/s, RSS idle, at
## saturation and during a 1 GiB response, with ratios and issue 11's targets
## (the latency the waypoint adds, over the mesh without it and over direct);
## and the waypoint again under one local and one global rate limit (issue 12)
.PHONY: bench-waypoint
bench: bench-waypoint
bench-waypoint: ratelimit-bin
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy nghttp2-client; }
	$(GO) test -run '^$$' -bench '^BenchmarkWaypoint$$' -benchtime 1x -timeout 30m ./waypoint/
