package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// tunnel is one accepted HBONE stream: one client connection.
type tunnel struct {
	conn net.Conn
	// peer is the client's verified identity (the source workload's, as
	// its ztunnel presents it).
	peer spiffeid.ID
	// src is the client's address; dst the address it connected to (a
	// service's cluster IP and port, or a workload's address).
	src, dst netip.AddrPort
	// srcWorkload is the client's workload, when known.
	srcWorkload *meshstate.Workload
	// header holds the CONNECT's baggage and traceparent.
	header http.Header

	// What every request of the tunnel repeats, made once (see
	// tunnelValues): the CONNECT header of tunnels to endpoints, the
	// forwarding fields naming the client, and the addresses as the
	// access log writes them. The slices are shared by the tunnel's
	// requests: nothing may write into them (a header edit replaces or
	// appends, and each has no room to append in place).
	upHeader         http.Header
	xff, forwarded   []string
	srcText, dstText string
}

// tunnelValues fills in what t's requests share.
func (t *tunnel) tunnelValues() {
	t.upHeader = http.Header{}
	if t.src.IsValid() {
		t.upHeader["Forwarded"] = []string{hbone.FormatForwarded(t.src)}
	}
	if v := t.header["Traceparent"]; len(v) > 0 {
		t.upHeader["Traceparent"] = v[:len(v):len(v)]
	}
	if ip := t.src.Addr(); ip.IsValid() {
		t.xff = []string{ip.String()}
		t.forwarded = []string{forwardedElement(ip)}
	}
	t.srcText, t.dstText = t.src.String(), t.dst.String()
}

// target is what a tunnel's destination names.
type target struct {
	svc  *config.Service
	port config.Port
	// wl is the destination workload of a workload-addressed tunnel
	// (svc is nil then).
	wl *meshstate.Workload
}

// key is the destination service's key, or the workload's uid.
func (t target) name() string {
	if t.svc != nil {
		return t.svc.Hostname
	}
	return t.wl.Name + "." + t.wl.Namespace
}

// resolve finds what dst names: a service bound to this waypoint by its
// cluster IP and one of its ports, or a workload (a waypoint may serve
// workloads by address). ok is false for anything else.
func resolve(cfg *config.Waypoint, snap *meshstate.Snapshot, dst netip.AddrPort) (target, bool) {
	if svc := cfg.ServiceByVIP(dst.Addr()); svc != nil {
		port, ok := svc.Port(dst.Port())
		return target{svc: svc, port: port}, ok
	}
	if w := snap.WorkloadByIP(dst.Addr()); w != nil && w.Waypoint != nil && isSelf(cfg, snap, w.Waypoint) {
		return target{wl: w, port: config.Port{Port: dst.Port(), TargetPort: dst.Port()}}, true
	}
	return target{}, false
}

// isSelf reports whether gw names this waypoint: its Service (named after
// the Gateway, in the Gateway's namespace) by hostname or cluster IP. A
// tunnel for a workload bound to another waypoint is refused, or it would
// skip that waypoint's policies.
func isSelf(cfg *config.Waypoint, snap *meshstate.Snapshot, gw *meshstate.GatewayAddress) bool {
	if gw.Hostname.Namespace != "" {
		svc := snap.Service(gw.Hostname.Key())
		return svc != nil && svc.Namespace == cfg.Namespace && svc.Name == cfg.Name
	}
	svc := snap.ServiceByVIP(gw.Address)
	return svc != nil && svc.Namespace == cfg.Namespace && svc.Name == cfg.Name
}

// ServeHBONE implements hbone.Handler.
func (p *Proxy) ServeHBONE(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
	cfg := p.cfg.Waypoint()
	if cfg == nil || !p.cfg.Mesh.IsLoaded() {
		p.log.Debug("refusing a tunnel: configuration not loaded yet", "peer", r.Peer, "authority", r.Authority)
		w.Refuse(http.StatusServiceUnavailable)
		return
	}
	snap := p.cfg.Mesh.Snapshot()
	if _, ok := resolve(cfg, snap, r.Authority); !ok {
		p.log.Debug("refusing a tunnel to a destination this waypoint does not serve", "peer", r.Peer, "authority", r.Authority)
		w.Refuse(http.StatusBadRequest)
		return
	}
	t := &tunnel{peer: r.Peer, dst: r.Authority, header: r.Header}
	t.src, t.srcWorkload = source(snap, r)
	if !p.enter() {
		w.Refuse(http.StatusServiceUnavailable) // closing
		return
	}
	c, err := w.Accept()
	if err != nil {
		p.wg.Done()
		return
	}
	// Serve on a fresh goroutine: this one's stack grew in the HBONE
	// server, and it would stay that deep for the tunnel's lifetime.
	w.Detach()
	t.conn = c
	p.open.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.open.Add(-1)
		defer c.Close()
		p.serveTunnel(t)
	}()
}

// source is the client's address and workload. The tunnel's own address
// is the client's ztunnel's (in-pod, that is the pod's address); the
// forwarded header may name the pod instead, and is believed only when the
// workload at that address has the identity the peer proved, so a
// workload cannot pass itself off as another's address.
func source(snap *meshstate.Snapshot, r *hbone.Request) (netip.AddrPort, *meshstate.Workload) {
	remote := addrPort(r.RemoteAddr)
	if f := r.Forwarded; f.IsValid() {
		if w := snap.WorkloadByIP(f.Addr()); w != nil && w.Identity() == r.Peer {
			return f, w
		}
	}
	if w := snap.WorkloadByIP(remote.Addr()); w != nil && w.Identity() == r.Peer {
		return remote, w
	}
	return remote, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serveTunnel serves one tunnel with the protocol its port or its first
// bytes say.
func (p *Proxy) serveTunnel(t *tunnel) {
	cfg := p.cfg.Waypoint()
	tgt, ok := resolve(cfg, p.cfg.Mesh.Snapshot(), t.dst)
	if !ok {
		return
	}
	t.tunnelValues()
	proto := tgt.port.Protocol
	var prefix []byte
	var err error
	switch proto {
	case config.Detect:
		proto, prefix, err = detect(t.conn, p.cfg.DetectTimeout)
	case config.HTTP, config.HTTP2, config.GRPC:
		// A port's HTTP version is the client's choice, as with Envoy's
		// automatic codec in Istio: an h2 client with prior knowledge may
		// use a port declared http, and an HTTP/1.1 client (grpc-web) one
		// declared grpc. What is sent upstream is still the port's.
		var h2 bool
		h2, prefix, err = sniffPreface(t.conn, p.cfg.ReadHeaderTimeout)
		switch {
		case h2 && proto == config.HTTP:
			proto = config.HTTP2
		case !h2:
			proto = config.HTTP
		}
	}
	if err != nil {
		return
	}
	if len(prefix) > 0 {
		t.conn = &prefixConn{Conn: t.conn, prefix: prefix}
	}
	switch proto {
	case config.HTTP:
		p.serveHTTP1(t)
	case config.HTTP2, config.GRPC:
		p.serveHTTP2(t)
	default:
		p.serveTCP(t)
	}
}
