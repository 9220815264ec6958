// Package route decides where ztunnel sends an outbound connection: to a
// service endpoint chosen by power-of-two-choices, through a waypoint, over
// HBONE to the destination's ztunnel, or straight through as plain TCP.
package route

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/meshstate"
)

// Kind is how a connection is forwarded.
type Kind int

const (
	// Passthrough connects to Target directly, without a tunnel.
	Passthrough Kind = iota
	// Direct tunnels over HBONE to the destination workload's ztunnel.
	Direct
	// Waypoint tunnels over HBONE to the destination's waypoint.
	Waypoint
)

func (k Kind) String() string {
	switch k {
	case Passthrough:
		return "passthrough"
	case Direct:
		return "hbone"
	case Waypoint:
		return "waypoint"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Route is the outcome of Resolve.
type Route struct {
	Kind Kind
	// Target is where to connect: the destination for Passthrough, the
	// HBONE server (<ip>:15008) otherwise.
	Target netip.AddrPort
	// Authority is the CONNECT :authority for Direct and Waypoint.
	Authority netip.AddrPort
	// SANs are the identities the HBONE server may present.
	SANs []spiffeid.ID
	// Workload is the destination workload (the waypoint's, for Waypoint);
	// nil when passing through to an unknown address.
	Workload *meshstate.Workload
	// Service is the service addressed, when the destination was a VIP.
	Service *meshstate.Service
}

var (
	// ErrNoHealthyEndpoint: the service has no healthy endpoint for the port.
	ErrNoHealthyEndpoint = errors.New("no healthy endpoint")
	// ErrUnknownPort: the service does not expose the port.
	ErrUnknownPort = errors.New("service has no such port")
	// ErrNoWaypoint: the destination has a waypoint that cannot be
	// reached. Traffic never bypasses a waypoint.
	ErrNoWaypoint = errors.New("waypoint not found")
)

// Load reports how many connections ztunnel has open to a workload; the
// balancer prefers the less loaded of two random endpoints. A nil Load
// makes the choice uniformly random.
type Load func(uid string) int64

// Resolve routes a connection from src (nil if unknown) to dst.
func Resolve(snap *meshstate.Snapshot, src *meshstate.Workload, dst netip.AddrPort, load Load) (Route, error) {
	r := resolver{snap: snap, src: src, load: load}
	if svc := snap.ServiceByVIP(dst.Addr()); svc != nil {
		return r.service(svc, dst)
	}
	if w := snap.WorkloadByIP(dst.Addr()); w != nil {
		return r.workload(w, dst, nil)
	}
	return Route{Kind: Passthrough, Target: dst}, nil
}

type resolver struct {
	snap *meshstate.Snapshot
	src  *meshstate.Workload
	load Load
}

func (r resolver) service(svc *meshstate.Service, dst netip.AddrPort) (Route, error) {
	if svc.Waypoint != nil && !r.srcIsWaypoint(svc.Waypoint) {
		return r.waypoint(svc.Waypoint, dst, svc)
	}
	if _, ok := svc.TargetPort(dst.Port()); !ok {
		return Route{}, fmt.Errorf("%w: %s port %d", ErrUnknownPort, svc.Key(), dst.Port())
	}
	w, port := r.pick(svc, dst.Port(), dst.Addr().Is4())
	if w == nil {
		return Route{}, fmt.Errorf("%w: %s port %d", ErrNoHealthyEndpoint, svc.Key(), dst.Port())
	}
	addr, _ := w.Address(dst.Addr().Is4())
	return r.workload(w, netip.AddrPortFrom(addr, port), svc)
}

func (r resolver) workload(w *meshstate.Workload, dst netip.AddrPort, svc *meshstate.Service) (Route, error) {
	if w.Waypoint != nil && !r.srcIsWaypoint(w.Waypoint) {
		return r.waypoint(w.Waypoint, dst, svc)
	}
	if w.Protocol == meshstate.TunnelHBONE {
		return Route{
			Kind:      Direct,
			Target:    netip.AddrPortFrom(dst.Addr(), inpod.InboundHBONEPort),
			Authority: dst,
			SANs:      []spiffeid.ID{w.Identity()},
			Workload:  w,
			Service:   svc,
		}, nil
	}
	return Route{Kind: Passthrough, Target: dst, Workload: w, Service: svc}, nil
}

// waypoint routes to one of the waypoint's workloads, keeping the original
// destination as the authority.
func (r resolver) waypoint(gw *meshstate.GatewayAddress, authority netip.AddrPort, svc *meshstate.Service) (Route, error) {
	want4 := authority.Addr().Is4()
	var wp *meshstate.Workload
	switch {
	case gw.Address.IsValid():
		if wp = r.snap.WorkloadByIP(gw.Address); wp == nil {
			if wsvc := r.snap.ServiceByVIP(gw.Address); wsvc != nil {
				wp, _ = r.pick(wsvc, 0, want4)
			}
		}
	default:
		if wsvc := r.snap.Service(gw.Hostname.Key()); wsvc != nil {
			wp, _ = r.pick(wsvc, 0, want4)
		}
	}
	if wp == nil {
		return Route{}, fmt.Errorf("%w for %v", ErrNoWaypoint, authority)
	}
	addr, ok := wp.Address(want4)
	if !ok {
		return Route{}, fmt.Errorf("%w: waypoint %s has no address", ErrNoWaypoint, wp.UID)
	}
	return Route{
		Kind:      Waypoint,
		Target:    netip.AddrPortFrom(addr, gw.Port()),
		Authority: authority,
		SANs:      []spiffeid.ID{wp.Identity()},
		Workload:  wp,
		Service:   svc,
	}, nil
}

// srcIsWaypoint reports whether the source is the waypoint itself, whose
// own traffic must not loop back to it.
func (r resolver) srcIsWaypoint(gw *meshstate.GatewayAddress) bool {
	if r.src == nil {
		return false
	}
	if gw.Address.IsValid() {
		if r.src.HasAddress(gw.Address) {
			return true
		}
		if svc := r.snap.ServiceByVIP(gw.Address); svc != nil {
			_, ok := r.src.Services[svc.Key()]
			return ok
		}
		return false
	}
	_, ok := r.src.Services[gw.Hostname.Key()]
	return ok
}

// pick chooses a healthy endpoint of svc by power of two choices and maps
// servicePort (0: any) to its target port.
func (r resolver) pick(svc *meshstate.Service, servicePort uint16, want4 bool) (*meshstate.Workload, uint16) {
	type cand struct {
		w    *meshstate.Workload
		port uint16
	}
	var cands []cand
	for _, w := range r.snap.Endpoints(svc.Key()) {
		if !w.Healthy {
			continue
		}
		if _, ok := w.Address(want4); !ok {
			continue
		}
		port := svc.EndpointPort(w, servicePort)
		if servicePort != 0 && port == 0 {
			continue
		}
		cands = append(cands, cand{w, port})
	}
	switch len(cands) {
	case 0:
		return nil, 0
	case 1:
		return cands[0].w, cands[0].port
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	if r.load != nil && r.load(b.w.UID) < r.load(a.w.UID) {
		a = b
	}
	return a.w, a.port
}
