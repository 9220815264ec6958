package config

import (
	"cmp"
	"errors"
	"net/netip"
	"strings"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
)

// Compile validates and compiles a waypoint resource. It fails only for a
// resource that does not say which waypoint it is for (nil, or without a
// name or namespace); every other problem is confined to the rule, route,
// service or policy that holds it (see the package documentation) and
// reported by the result's Warnings.
func Compile(wp *waypointapi.Waypoint) (*Waypoint, error) {
	if wp == nil {
		return nil, errors.New("config: no waypoint resource")
	}
	switch {
	case wp.GetName() == "":
		return nil, field("name").errorf("empty")
	case wp.GetNamespace() == "":
		return nil, field("namespace").errorf("empty")
	}
	out := &Waypoint{
		Name:        wp.GetName(),
		Namespace:   wp.GetNamespace(),
		TrustDomain: wp.GetTrustDomain(),
		byVIP:       make(map[netip.Addr]*Service),
		byKey:       make(map[string]*Service),
	}
	var warn warnings
	out.Policies = compilePolicies("", out.Namespace, wp.GetPolicies(), &warn)
	for i, s := range wp.GetServices() {
		f := field("").index("services", i)
		svc, err := compileServiceShape(f, s)
		if err == nil {
			err = out.checkUnique(f, svc)
		}
		if err != nil {
			warn.add(err, ServiceDropped)
			continue
		}
		svc.HTTP = compileRoutes(f, svc.Namespace, "", s.GetHttpRoutes(), httpRoutes, &warn)
		svc.GRPC = compileRoutes(f, svc.Namespace, "", s.GetGrpcRoutes(), grpcRoutes, &warn)
		svc.Consumers = compileConsumers(f, svc.Namespace, s, &warn)
		svc.Policies = compilePolicies(f, svc.Namespace, s.GetPolicies(), &warn)
		out.byKey[svc.Key()] = svc
		for _, ip := range svc.VIPs {
			out.byVIP[ip] = svc
		}
		out.Services = append(out.Services, svc)
	}
	out.warnings = warn
	return out, nil
}

// checkUnique reports a service whose key or a VIP of which an earlier
// service already has: the earlier one keeps them.
func (w *Waypoint) checkUnique(f field, svc *Service) error {
	if _, dup := w.byKey[svc.Key()]; dup {
		return f.errorf("duplicate service %s", svc.Key())
	}
	for j, ip := range svc.VIPs {
		if other, dup := w.byVIP[ip]; dup {
			return f.index("vips", j).errorf("%s is also a VIP of service %s", ip, other.Key())
		}
	}
	return nil
}

// compilePolicies converts the policies of parent (the waypoint, "", or a
// service, whose namespace is ns). A policy that does not convert becomes
// one that denies everything: dropping it could widen access, and
// rejecting the resource would freeze every other service's
// configuration.
func compilePolicies(parent field, ns string, ps []*waypointapi.L7Authorization, warn *warnings) []*policy.Policy {
	var out []*policy.Policy
	for i, p := range ps {
		pf := parent.index("policies", i)
		var err error
		if p == nil {
			err = errMissing
		} else {
			var cp *policy.Policy
			if cp, err = authz.Compile(p); err == nil {
				out = append(out, cp)
				continue
			}
		}
		warn.add(pf.wrap(err), PolicyDeniesAll)
		out = append(out, denyAll(pf, p, ns))
	}
	return out
}

// denyAll is the policy that stands for p when p does not compile: a DENY
// with one group without conditions, which matches every request and
// connection. It keeps p's name so that denials name it; a name that
// policy.Policy.Validate would refuse is replaced by the field's path, a
// namespace by ns (the waypoint's or the service's), or failing that by
// "invalid".
func denyAll(f field, p *waypointapi.L7Authorization, ns string) *policy.Policy {
	return &policy.Policy{
		Name:      cmp.Or(policyName(p.GetName()), string(f)),
		Namespace: cmp.Or(policyName(p.GetNamespace()), policyName(ns), "invalid"),
		Scope:     policy.WorkloadSelector,
		Action:    policy.Deny,
		Groups:    []policy.Group{{}},
	}
}

// policyName returns s if a policy may be named s (policy.Policy.Validate:
// not empty, no "/"), "" otherwise.
func policyName(s string) string {
	if strings.Contains(s, "/") {
		return ""
	}
	return s
}

// compileServiceShape compiles what identifies a service and where it
// listens: its names, VIPs and ports. A problem there drops the service.
func compileServiceShape(f field, s *waypointapi.Service) (*Service, error) {
	if s == nil {
		return nil, f.wrap(errMissing)
	}
	svc := &Service{
		Name:       s.GetName(),
		Namespace:  s.GetNamespace(),
		Hostname:   s.GetHostname(),
		RateLimits: s.GetRateLimits(),
	}
	switch {
	case svc.Name == "":
		return nil, f.child("name").errorf("empty")
	case svc.Namespace == "":
		return nil, f.child("namespace").errorf("empty")
	case svc.Hostname == "":
		return nil, f.child("hostname").errorf("empty")
	}
	for i, b := range s.GetVips() {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return nil, f.index("vips", i).errorf("invalid IP address: %d bytes, want 4 or 16", len(b))
		}
		ip = ip.Unmap()
		if !ip.IsValid() || ip.IsUnspecified() {
			return nil, f.index("vips", i).errorf("invalid IP address %s", ip)
		}
		svc.VIPs = append(svc.VIPs, ip)
	}
	seen := make(map[uint16]bool)
	for i, p := range s.GetPorts() {
		pf := f.index("ports", i)
		port, err := compilePort(pf, p)
		if err != nil {
			return nil, err
		}
		if seen[port.Port] {
			return nil, pf.child("port").errorf("duplicate port %d", port.Port)
		}
		seen[port.Port] = true
		svc.Ports = append(svc.Ports, port)
	}
	return svc, nil
}

func compilePort(f field, p *waypointapi.ServicePort) (Port, error) {
	if p == nil {
		return Port{}, f.wrap(errMissing)
	}
	port, err := portNumber(f.child("port"), p.GetPort(), false)
	if err != nil {
		return Port{}, err
	}
	target, err := portNumber(f.child("target_port"), p.GetTargetPort(), true)
	if err != nil {
		return Port{}, err
	}
	return Port{
		Name:        p.GetName(),
		Port:        port,
		TargetPort:  target,
		AppProtocol: p.GetAppProtocol(),
		Protocol:    portProtocol(p.GetName(), p.GetAppProtocol(), port),
	}, nil
}

// portNumber checks a TCP port number; zero is allowed where it means
// "unset".
func portNumber(f field, p uint32, zeroOK bool) (uint16, error) {
	if p > 65535 || p == 0 && !zeroOK {
		return 0, f.errorf("invalid port %d", p)
	}
	return uint16(p), nil
}
