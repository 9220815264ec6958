// Package inpod holds the contract between the node agent, which installs
// traffic redirection rules inside each enrolled pod's network namespace, and
// ztunnel, which opens its listeners in that namespace. Both sides must agree
// on the ports, socket marks and routing table below; the values are Istio's,
// so Skiff's node agent and Istio's ztunnel (and the other way round) work
// together.
package inpod

const (
	// OutboundPort receives the pod's outbound TCP, redirected by the rules.
	OutboundPort = 15001
	// InboundPlaintextPort receives inbound TCP from callers outside the mesh.
	InboundPlaintextPort = 15006
	// InboundHBONEPort receives HBONE (mutual TLS) from other ztunnels.
	InboundHBONEPort = 15008

	// SocketMark is set (SO_MARK) on every socket ztunnel opens inside a pod,
	// so the redirect rules let its own traffic through untouched.
	SocketMark = 0x539
	// TProxyMark marks connections accepted transparently on the inbound
	// ports; replies carrying it are routed back to ztunnel via RouteTable.
	TProxyMark = 0x111
	// MarkMask is the part of the packet mark the rules own.
	MarkMask = 0xfff
	// RouteTable is the policy-routing table that delivers TProxyMark packets
	// locally ("local 0.0.0.0/0 dev lo").
	RouteTable = 100

	// ProbeSNATAddress is the link-local address kubelet's probes are SNATed
	// to on the node; the pod rules accept traffic from it without redirect.
	ProbeSNATAddress = "169.254.7.127"
	// ProbeSNATAddressV6 is the IPv6 equivalent (Istio's).
	ProbeSNATAddressV6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"
)
