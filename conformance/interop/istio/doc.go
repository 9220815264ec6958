// Package istio checks that Skiff's HBONE speaks the same wire protocol as
// Istio's: Istio's own Go HBONE client (istio.io/istio/pkg/hbone) tunnels
// through a Skiff server, and Skiff's client tunnels through Istio's Go
// HBONE server, both with mutual TLS and Skiff-issued SPIFFE certificates.
//
// It is a module of its own so that Istio's large dependency tree stays out
// of Skiff's go.mod.
package istio
