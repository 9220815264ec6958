// Package caclient is a client for Istio's certificate service,
// istio.v1.auth.IstioCertificateService/CreateCertificate, as served by
// istiod-lite (and by istiod). It implements identity.CAClient, so an
// identity.Manager can fetch and renew workload certificates from a remote CA.
//
// The client authenticates with a Kubernetes service-account token read from a
// file on every call (projected tokens rotate), verifies the server against
// the mesh root, and, for a node proxy, asks for other identities with the
// ImpersonatedIdentity metadata key. The generated protocol code is in caapi.
package caclient
