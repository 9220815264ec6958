// Package policy evaluates authorization: Istio's security.istio.io/v1
// AuthorizationPolicy in the form the control plane sends to ztunnel, the xDS
// resource istio.security.Authorization, plus the HTTP attributes the
// waypoint checks (paths, methods, hosts, headers). ztunnel evaluates
// connections; the waypoint evaluates requests, and connections it proxies
// as TCP, with the same rules.
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
// policy matches. [EvaluateAll] does the same over the union of several
// sets (the waypoint's policies and the service's). AUDIT policies never
// allow or deny: [Audited] lists those that match, for the access log.
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
// # HTTP attributes
//
// A [Conn] carrying a [Request] is checked against the L7 conditions of a
// [Match]; the L4 ones still apply, ANDed with them.
//
//   - Paths are compared with the request's normalized path, without query,
//     case-sensitively. Besides exact, prefix ("/api/*"), suffix ("*.php")
//     and presence ("*"), a path may be an Istio path template with "{*}"
//     (one segment) and "{**}" (any rest); see [ParsePathMatch].
//   - Methods are compared case-sensitively.
//   - Hosts are compared case-insensitively (RFC 4343, and Istio since its
//     advisory GHSA-7774-7vr3-cc8j). Istio compares a value with the whole
//     authority, port included, so "example.com" misses
//     "example.com:8080" and its documentation asks users to list
//     "example.com:*" as well. Here a value also matches the host alone,
//     without port and trailing dot, so "example.com" covers every port;
//     a value naming a port ("example.com:8080", "example.com:*") is
//     still compared with the authority as sent, as in Istio.
//   - Headers (request.headers[name]) must each hold. The value of a header
//     sent more than once is its values joined with ",", as Envoy matches
//     it. A missing header fails Values and passes NotValues; a Presence
//     entry ("*") matches a header that is present, even empty. A "host"
//     condition reads the authority.
//
// A Conn without a Request (ztunnel, or a TCP connection through the
// waypoint) cannot be checked against L7 conditions: a Match holding any is
// treated as Unsupported (below). So an ALLOW rule on paths never admits
// plain TCP, and a DENY rule on paths refuses it whenever its L4
// conditions hold.
//
// # Empty lists
//
//   - A Policy with no groups matches nothing. Istio sends that for an
//     AuthorizationPolicy without rules (spec: {}): as ALLOW it denies every
//     connection to the workload, as DENY it has no effect.
//   - A Group with no Rules matches everything. Istio sends that for an empty
//     rule (rules: [{}]), which it documents as always matching.
//   - A Rules with no matches, or a Match with no conditions, carries nothing
//     that can be checked; it is treated as Unsupported (below). Istio's
//     validation rejects empty sources and operations, so the control plane
//     produces these only after dropping attributes it cannot translate.
//
// # Unsupported attributes (fail closed)
//
// Some attributes cannot be checked: at L4, all HTTP ones; anywhere, request
// principals, remote IP blocks, and "when" keys not translated. The
// translator keeps the conditions it can check of such a source or
// operation and sets [Match].Unsupported; an untranslatable "when"
// condition becomes a Rules holding one Match{Unsupported: true}.
// Evaluation then assumes the unchecked conditions are false in an ALLOW
// policy and true in a DENY or AUDIT policy. So an unsupported Match never
// matches in an ALLOW policy, and in a DENY policy it matches when its
// checked conditions match (every connection if it has none). Either way the
// result is never more permissive than the policy the user wrote.
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
// (bad prefix, port, match kind or template) matches no connection, and a
// policy with an unknown action denies every connection. Header names must
// be lower case: refusing other forms, rather than folding them, keeps the
// name checked the one the control plane sent.
package policy
