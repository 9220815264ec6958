// Package bench holds `make bench-control-plane`: istiod-lite, built and run
// as its own process against a real apiserver, with a cluster of many pods
// and services, serving many simulated ztunnel clients.
package bench
