package config

import (
	"errors"
	"net/netip"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
)

// Compile validates and compiles a waypoint resource. The error names the
// offending field; nothing is kept from a resource that fails.
func Compile(wp *waypointapi.Waypoint) (*Waypoint, error) {
	if wp == nil {
		return nil, errors.New("config: no waypoint resource")
	}
	out := &Waypoint{
		Name:        wp.GetName(),
		Namespace:   wp.GetNamespace(),
		TrustDomain: wp.GetTrustDomain(),
		byVIP:       make(map[netip.Addr]*Service),
		byKey:       make(map[string]*Service),
	}
	var err error
	if out.Policies, err = compilePolicies("", wp.GetPolicies()); err != nil {
		return nil, err
	}
	for i, s := range wp.GetServices() {
		f := field("").index("services", i)
		svc, err := compileService(f, s)
		if err != nil {
			return nil, err
		}
		if _, dup := out.byKey[svc.Key()]; dup {
			return nil, f.errorf("duplicate service %s", svc.Key())
		}
		out.byKey[svc.Key()] = svc
		for j, ip := range svc.VIPs {
			if other, dup := out.byVIP[ip]; dup {
				return nil, f.index("vips", j).errorf("%s is also a VIP of service %s", ip, other.Key())
			}
			out.byVIP[ip] = svc
		}
		out.Services = append(out.Services, svc)
	}
	return out, nil
}

// compilePolicies converts the policies of parent (the waypoint, "", or
// a service).
func compilePolicies(parent field, ps []*waypointapi.L7Authorization) ([]*policy.Policy, error) {
	var out []*policy.Policy
	for i, p := range ps {
		pf := parent.index("policies", i)
		if p == nil {
			return nil, pf.wrap(errMissing)
		}
		cp, err := authz.Compile(p)
		if err != nil {
			return nil, pf.wrap(err)
		}
		out = append(out, cp)
	}
	return out, nil
}

func compileService(f field, s *waypointapi.Service) (*Service, error) {
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
	var err error
	if svc.HTTP, err = compileHTTPRoutes(f, s.GetHttpRoutes()); err != nil {
		return nil, err
	}
	if svc.GRPC, err = compileGRPCRoutes(f, s.GetGrpcRoutes()); err != nil {
		return nil, err
	}
	if svc.Policies, err = compilePolicies(f, s.GetPolicies()); err != nil {
		return nil, err
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
