package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// This AuthorizationPolicy, as the control plane translates it:
//
//	action: ALLOW
//	rules:
//	- from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
//	  to:   [{operation: {ports: ["8080"]}}]
func ExampleEvaluate() {
	allowSleep := &policy.Policy{
		Name: "allow-sleep", Namespace: "default", Scope: policy.WorkloadSelector, Action: policy.Allow,
		Groups: []policy.Group{{Rules: []policy.Rules{
			{Matches: []policy.Match{{Principals: []policy.StringMatch{policy.ParseStringMatch("cluster.local/ns/default/sa/sleep")}}}},
			{Matches: []policy.Match{{DestinationPorts: []uint32{8080}}}},
		}}},
	}
	if err := allowSleep.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	applicable := policy.Applicable([]*policy.Policy{allowSleep}, "default", []string{"default/allow-sleep"}, "istio-system")

	c := policy.Conn{
		SrcIP:   netip.MustParseAddr("10.0.0.1"),
		DstIP:   netip.MustParseAddr("10.0.0.2"),
		DstPort: 8080,
		Peer:    spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep"),
	}
	fmt.Printf("%+v\n", policy.Evaluate(applicable, c))
	c.Peer = spiffeid.ID{} // plaintext
	fmt.Printf("%+v\n", policy.Evaluate(applicable, c))
	// Output:
	// {Allowed:true Policy:default/allow-sleep Reason:matched ALLOW policy}
	// {Allowed:false Policy: Reason:no ALLOW policy matched}
}

// The waypoint evaluates the policies attached to it and to the service
// together. This DENY policy, as the control plane translates it:
//
//	action: DENY
//	rules:
//	- to: [{operation: {paths: ["/admin", "/admin/*"]}}]
//
// refuses requests under /admin, and refuses plain TCP through the
// waypoint: its paths cannot be checked there, and a DENY fails closed.
func ExampleEvaluateAll() {
	denyAdmin := &policy.Policy{
		Name: "deny-admin", Namespace: "default", Scope: policy.WorkloadSelector, Action: policy.Deny,
		Groups: []policy.Group{{Rules: []policy.Rules{{Matches: []policy.Match{{
			Paths: []policy.StringMatch{policy.ParseStringMatch("/admin"), policy.ParseStringMatch("/admin/*")},
		}}}}}},
	}
	var servicePolicies []*policy.Policy

	c := policy.Conn{
		SrcIP:   netip.MustParseAddr("10.0.0.1"),
		DstIP:   netip.MustParseAddr("10.96.0.10"),
		DstPort: 8080,
		Peer:    spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep"),
	}
	for _, path := range []string{"/admin/users", "/public"} {
		c.Request = &policy.Request{Method: "GET", Path: path, Host: "api.default.svc.cluster.local"}
		fmt.Printf("%s: %+v\n", path, policy.EvaluateAll(c, []*policy.Policy{denyAdmin}, servicePolicies))
	}
	c.Request = nil
	fmt.Printf("TCP: %+v\n", policy.EvaluateAll(c, []*policy.Policy{denyAdmin}, servicePolicies))
	// Output:
	// /admin/users: {Allowed:false Policy:default/deny-admin Reason:matched DENY policy}
	// /public: {Allowed:true Policy: Reason:no ALLOW policy}
	// TCP: {Allowed:false Policy:default/deny-admin Reason:matched DENY policy}
}
