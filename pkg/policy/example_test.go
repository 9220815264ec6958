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
