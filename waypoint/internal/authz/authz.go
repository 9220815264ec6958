// Package authz decides whether the waypoint lets a request or connection
// through: Istio's AuthorizationPolicy with L7 attributes, attached to the
// waypoint or to a service, compiled from the waypoint resource's
// L7Authorization and evaluated by pkg/policy.
//
// # What applies
//
// The control plane sends each policy under what its targetRefs name: the
// waypoint itself or one of its services. They are already the ones that
// apply, so scope plays no part: Compile marks them WorkloadSelector and
// Decide evaluates the waypoint's and the service's policies together,
// without policy.Applicable.
//
// # A policy the waypoint cannot evaluate denies
//
// Each case fails closed: a condition that cannot be checked counts as
// false in an ALLOW policy (its rule admits nothing) and true in a DENY or
// AUDIT policy (the rest of its rule decides). See pkg/policy's
// documentation for how an Unsupported match is evaluated.
//
//   - A TCP connection through the waypoint has no HTTP request: the L7
//     conditions of a match are unchecked (pkg/policy).
//   - Fields this build does not know, sent by a newer control plane, may
//     narrow a rule. As ztunnel does (pkg/meshstate/xdssource): unknown
//     fields of the policy make it one unchecked condition; of a group or a
//     rules, that group or rules; of a match or its L4 part, that match keeps
//     its known conditions and is marked Unsupported; of anything inside a
//     match (a string match, address or header condition of a newer kind),
//     the whole match is one unchecked condition.
//   - A path template Istio would refuse ("/{**}/x/{*}", "/a/{*}.txt", an
//     operator in a prefix or suffix value): the paths or not_paths list that
//     holds it is unchecked.
//   - A condition on a pseudo-header other than ":authority" (which is
//     the "host" header): that header condition is unchecked.
//   - An action other than ALLOW or DENY on a policy that is not AUDIT:
//     Compile fails, so the caller keeps its last good configuration rather
//     than guess.
//
// Path values are compared with the normalized request path (see package
// pathnorm), so a value that is not itself normal ("/a//b", "/a/./b",
// "%7E" for "~", a lower-case escape, an encoded slash) never matches
// those characters: policies must be written in normalized form, as
// Istio's documentation asks.
package authz

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/skiffmesh/skiff/pkg/meshstate/xdssource"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Compile converts a policy of the waypoint resource into pkg/policy's
// form. The result is validated; an error means the policy is malformed
// (see the package documentation for what fails closed instead).
func Compile(p *waypointapi.L7Authorization) (*policy.Policy, error) {
	if p == nil {
		return nil, errors.New("authz: nil policy")
	}
	out := &policy.Policy{
		Name:      p.GetName(),
		Namespace: p.GetNamespace(),
		Scope:     policy.WorkloadSelector,
	}
	switch {
	case p.GetAudit():
		out.Action = policy.Audit
	case p.GetAction() == securityapi.Action_ALLOW:
		out.Action = policy.Allow
	case p.GetAction() == securityapi.Action_DENY:
		out.Action = policy.Deny
	default:
		return nil, fmt.Errorf("authz: policy %q: unknown action %d", out.Key(), p.GetAction())
	}
	if unknown(p) {
		out.Groups = []policy.Group{{Rules: []policy.Rules{unchecked()}}}
	} else {
		for gi, g := range p.GetGroups() {
			pg, err := group(g)
			if err != nil {
				return nil, fmt.Errorf("authz: policy %q: groups[%d]%w", out.Key(), gi, err)
			}
			out.Groups = append(out.Groups, pg)
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	return out, nil
}

// errNil reports a nil element in a list: protobuf decoding never makes
// one, and reading it as an empty group would match everything.
var errNil = errors.New(": nil")

func group(g *waypointapi.L7Group) (policy.Group, error) {
	if g == nil {
		return policy.Group{}, errNil
	}
	if unknown(g) {
		return policy.Group{Rules: []policy.Rules{unchecked()}}, nil
	}
	var out policy.Group
	for ri, r := range g.GetRules() {
		if r == nil {
			return policy.Group{}, fmt.Errorf(".rules[%d]%w", ri, errNil)
		}
		if unknown(r) {
			out.Rules = append(out.Rules, unchecked())
			continue
		}
		var pr policy.Rules
		for mi, m := range r.GetMatches() {
			pm, err := match(m)
			if err != nil {
				return policy.Group{}, fmt.Errorf(".rules[%d].matches[%d]%w", ri, mi, err)
			}
			pr.Matches = append(pr.Matches, pm)
		}
		out.Rules = append(out.Rules, pr)
	}
	return out, nil
}

// unchecked is a condition that cannot be checked: false in an ALLOW
// policy, true otherwise.
func unchecked() policy.Rules {
	return policy.Rules{Matches: []policy.Match{{Unsupported: true}}}
}

func match(m *waypointapi.L7Match) (policy.Match, error) {
	if m == nil {
		return policy.Match{}, errNil
	}
	if innerUnknown(m) {
		return policy.Match{Unsupported: true}, nil
	}
	var out policy.Match
	if l4 := m.GetL4(); l4 != nil {
		var err error
		if out, err = xdssource.ConvertMatch(l4); err != nil {
			return policy.Match{}, fmt.Errorf(".l4: %w", err)
		}
	}
	out.Unsupported = out.Unsupported || unknown(m)

	var ok bool
	if out.Paths, ok = paths(m.GetPaths()); !ok {
		out.Paths, out.Unsupported = nil, true
	}
	if out.NotPaths, ok = paths(m.GetNotPaths()); !ok {
		out.NotPaths, out.Unsupported = nil, true
	}
	out.Methods = xdssource.ConvertStringMatches(m.GetMethods())
	out.NotMethods = xdssource.ConvertStringMatches(m.GetNotMethods())
	out.Hosts = xdssource.ConvertStringMatches(m.GetHosts())
	out.NotHosts = xdssource.ConvertStringMatches(m.GetNotHosts())
	for hi, h := range m.GetHeaders() {
		if h == nil {
			return policy.Match{}, fmt.Errorf(".headers[%d]%w", hi, errNil)
		}
		name := strings.ToLower(h.GetName())
		if name == ":authority" {
			name = "host"
		} else if strings.HasPrefix(name, ":") {
			out.Unsupported = true
			continue
		}
		out.Headers = append(out.Headers, policy.HeaderMatch{
			Name:      name,
			Values:    xdssource.ConvertStringMatches(h.GetValues()),
			NotValues: xdssource.ConvertStringMatches(h.GetNotValues()),
		})
	}
	return out, nil
}

// paths converts path values, reading those with "{*}" or "{**}" as path
// templates the way Istio's control plane does. ok is false if a value is
// a template Istio would refuse: the list cannot be checked.
func paths(in []*securityapi.StringMatch) (out []policy.StringMatch, ok bool) {
	out = xdssource.ConvertStringMatches(in)
	for i, s := range out {
		switch s.Kind {
		case policy.Exact:
			if policy.IsPathTemplate(s.Value) {
				t, err := policy.ParsePathMatch(s.Value)
				if err != nil {
					return nil, false
				}
				out[i] = t
			}
		case policy.Prefix, policy.Suffix:
			// In Istio's syntax the '*' of a prefix or suffix sits outside
			// the operator, which makes the template invalid.
			if policy.IsPathTemplate(s.Value) {
				return nil, false
			}
		}
	}
	return out, true
}

// unknown reports whether m itself carries fields this build does not
// know (a newer control plane's).
func unknown(m proto.Message) bool { return len(m.ProtoReflect().GetUnknown()) > 0 }

// innerUnknown reports whether a message inside m, other than its L4
// match, carries unknown fields: a condition of a kind this build cannot
// read. Unknown fields of m and of its L4 match are conditions of their own
// that leave the known ones readable.
func innerUnknown(m *waypointapi.L7Match) bool {
	found := false
	protorange.Range(m.ProtoReflect(), func(v protopath.Values) error {
		if len(v.Path) == 1 {
			return nil // m itself
		}
		if step := v.Path.Index(-1); len(v.Path) == 2 && step.Kind() == protopath.FieldAccessStep && step.FieldDescriptor().Name() == "l4" {
			return nil
		}
		if nm, ok := v.Index(-1).Value.Interface().(protoreflect.Message); ok && len(nm.GetUnknown()) > 0 {
			found = true
			return protorange.Terminate
		}
		return nil
	})
	return found
}

// Decision is the outcome for one request or connection.
type Decision struct {
	Allowed bool
	// Policy ("namespace/name") and Reason say what decided: for a
	// denial, the DENY policy that matched or why no ALLOW policy did.
	Policy, Reason string
	// Audit lists the AUDIT policies that matched, in order: the
	// waypoint's, then the service's.
	Audit []string
}

// Decide evaluates the waypoint's policies and the service's together,
// Istio's way: a matching DENY denies; otherwise, if there are ALLOW
// policies, one must match. AUDIT policies only show in Audit. It does not
// allocate when there are no policies.
func Decide(waypoint, service []*policy.Policy, c policy.Conn) Decision {
	d := policy.EvaluateAll(c, waypoint, service)
	return Decision{
		Allowed: d.Allowed,
		Policy:  d.Policy,
		Reason:  d.Reason,
		Audit:   policy.Audited(c, waypoint, service),
	}
}
