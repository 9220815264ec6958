package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
)

// errNoEndpoint: the destination has no healthy endpoint to send to.
var errNoEndpoint = errors.New("no healthy endpoint")

// serveTCP passes a tunnel through at L4: the policies' L4 conditions
// decide (L7 ones cannot be checked on bytes, so they fail closed), then
// the bytes go to one endpoint of the service, or to the workload.
func (p *Proxy) serveTCP(t *tunnel) {
	rec := p.cfg.Telemetry.startConn(t)
	cfg := p.cfg.Waypoint()
	snap := p.cfg.Mesh.Snapshot()
	tgt, ok := resolve(cfg, snap, t.dst)
	if !ok {
		rec.finish(errors.New("destination no longer served"))
		return
	}
	rec.target(tgt)
	var svcPolicies []*policy.Policy
	if tgt.svc != nil {
		svcPolicies = tgt.svc.Policies
	}
	d := authz.Decide(cfg.Policies, svcPolicies, policy.Conn{SrcIP: t.src.Addr(), DstIP: t.dst.Addr(), DstPort: t.dst.Port(), Peer: t.peer})
	if !d.Allowed {
		rec.deny(d)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ConnectTimeout)
	eps := p.targetEndpoints(snap, tgt, t.dst)
	e, up, err := p.dialAny(ctx, eps, t)
	cancel()
	if err != nil {
		rec.finish(err)
		return
	}
	defer up.Close()
	rec.upstream(e)
	sent, recv, err := hbone.Splice(p.ctx, t.conn, up)
	e.host.End(outlier.Success)
	rec.bytes(sent, recv)
	rec.finish(err)
}

// targetEndpoints are the candidates for a tunnel's destination: the
// service's endpoints on its port, or the addressed workload itself.
func (p *Proxy) targetEndpoints(snap *meshstate.Snapshot, tgt target, dst netip.AddrPort) *endpointSet {
	if tgt.svc != nil {
		return p.endpoints(snap, tgt.svc.Key(), dst.Port(), dst.Addr().Is4())
	}
	return p.workloadEndpoints(tgt.wl, dst)
}

// dialAny opens a tunnel to one of eps, trying another after a connect
// failure, as Istio's ztunnel does for TCP to a service.
func (p *Proxy) dialAny(ctx context.Context, eps *endpointSet, t *tunnel) (endpoint, net.Conn, error) {
	var tried []*balance.Host
	var last error = errNoEndpoint
	for range 3 {
		e, ok := eps.pick(tried)
		if !ok {
			return endpoint{}, nil, last
		}
		tried = append(tried, e.host)
		e.host.Begin()
		c, err := p.cfg.Upstream.Tunnel(ctx, e.ep, t.upHeader)
		if err == nil {
			return e, c, nil
		}
		e.host.End(outlier.LocalFailure)
		last = err
	}
	return endpoint{}, nil, last
}
