// Package policy evaluates L4 authorization: Istio's security.istio.io/v1
// AuthorizationPolicy in the form the control plane sends to ztunnel, the xDS
// resource istio.security.Authorization. ztunnel uses it as is; the waypoint
// will add L7 attributes on top.
//
// # Structure
//
// A [Policy] is a list of [Group]s, one per rule of the AuthorizationPolicy.
// A Group is a list of [Rules], one per from, to and when clause. Rules is a
// list of [Match]es, one per source, operation or condition. The policy
// matches a connection if any group matches; a group if all its Rules match;
// a Rules if any of its matches matches; a Match if every field that is set
// matches: a positive list when any entry matches, a negative ("Not") list
// when no entry matches.
//
// # Decision
//
// [Evaluate] takes the policies that apply to the destination workload (see
// [Applicable]): a matching DENY policy denies; otherwise, with no ALLOW
// policy the connection is allowed; otherwise it is allowed only if an ALLOW
// policy matches.
//
// # Identity
//
// Principals are SPIFFE IDs without "spiffe://" ("cluster.local/ns/default/sa/sleep").
// The source namespace is the <ns> of a peer ID of the form
// spiffe://<td>/ns/<ns>/sa/<sa>. A connection without a peer identity
// (plaintext) matches no principal and no namespace entry, whatever its kind,
// so Not lists are satisfied by it: notPrincipals: ["*"] selects plaintext
// traffic, as in Istio. A peer ID of another form has no namespace.
//
// # Empty lists
//
//   - A Policy with no groups matches nothing. Istio sends that for an
//     AuthorizationPolicy without rules (spec: {}): as ALLOW it denies every
//     connection to the workload, as DENY it has no effect.
//   - A Group with no Rules matches everything. Istio sends that for an empty
//     rule (rules: [{}]), which it documents as always matching.
//   - A Rules with no matches, or a Match with no conditions, carries nothing
//     that ztunnel can check; it is treated as Unsupported (below). Istio's
//     validation rejects empty sources and operations, so the control plane
//     produces these only after dropping attributes ztunnel cannot check.
//
// # Unsupported attributes (fail closed)
//
// ztunnel cannot check L7 attributes (methods, paths, hosts, headers, request
// principals, remote IP blocks, L7 "when" keys). The translator keeps the L4
// conditions of such a source or operation and sets [Match].Unsupported; an
// L7 "when" condition becomes a Rules holding one Match{Unsupported: true}.
// Evaluation then assumes the unchecked conditions are false in an ALLOW
// policy and true in a DENY policy. So an unsupported Match never matches in an
// ALLOW policy, and in a DENY policy it matches when its L4 conditions match
// (every connection if it has none). Either way the result is never more
// permissive than the policy the user wrote.
//
// This differs from Istio in two ways. For ALLOW, istiod drops the whole rule
// (group), which is stricter still; a translator that wants exactly that omits
// the group. For DENY with only L7 attributes, istiod sends an empty Match
// that ztunnel skips, so the policy has no effect (istio/istio#61126); here the
// same input denies every connection the policy applies to.
//
// # Validation
//
// [Policy.Validate] reports malformed policies. A caller must not drop a policy
// that fails validation and carry on: dropping an ALLOW or DENY policy can widen
// access. Reject the whole update and keep the last good set. Evaluate
// assumes validated policies; on others it never panics, a malformed entry
// (bad prefix, port or match kind) matches no connection, and a policy with an
// unknown action denies every connection.
package policy
