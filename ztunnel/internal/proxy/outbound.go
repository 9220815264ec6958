package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/ztunnel/internal/route"
	"github.com/skiffmesh/skiff/ztunnel/internal/socket"
	"github.com/skiffmesh/skiff/ztunnel/internal/socks5"
)

const socksHandshakeTimeout = 10 * time.Second

// handleRedirected serves a connection redirected to the outbound port.
func (i *Instance) handleRedirected(c *net.TCPConn) {
	dst, err := socket.OriginalDst(c)
	if err != nil || dst == socket.AddrPort(c.LocalAddr()) {
		i.log.Debug("outbound connection was not redirected; closing", "src", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	i.outbound(c, dst, nil)
}

// handleSOCKS5 serves a SOCKS5 CONNECT like a redirected connection.
func (i *Instance) handleSOCKS5(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	req, err := socks5.ReadRequest(c)
	if err != nil {
		i.log.Debug("bad SOCKS5 request", "src", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	dst := req.Addr
	if req.Host != "" {
		ctx, cancel := context.WithTimeout(i.ctx, socksHandshakeTimeout)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", req.Host)
		cancel()
		if err != nil || len(addrs) == 0 {
			socks5.WriteReply(c, socks5.HostUnreachable, netip.AddrPort{})
			c.Close()
			return
		}
		dst = netip.AddrPortFrom(addrs[0].Unmap(), req.Port)
	}
	c.SetDeadline(time.Time{})
	i.outbound(c, dst, func(err error, bind netip.AddrPort) error {
		return socks5.WriteReply(c, socksReply(err), bind)
	})
}

func socksReply(err error) socks5.Reply {
	var se *hbone.StatusError
	switch {
	case err == nil:
		return socks5.Succeeded
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return socks5.NotAllowed
	case errors.Is(err, route.ErrNoHealthyEndpoint):
		return socks5.HostUnreachable
	case errors.Is(err, errUnknownSource), errors.Is(err, errLoop):
		return socks5.NotAllowed
	}
	return socks5.ConnectionRefused
}

var (
	// errNotLoaded: without the whole state, traffic could bypass a
	// tunnel or a policy; refuse it.
	errNotLoaded     = errors.New("configuration not loaded yet")
	errUnknownSource = errors.New("source is not a workload served by this ztunnel")
	errLoop          = errors.New("destination is a ztunnel port")
)

// outbound connects c's traffic to dst and copies until both sides end.
// reply, if set, is told the outcome before any byte is copied.
func (i *Instance) outbound(c *net.TCPConn, dst netip.AddrPort, reply func(error, netip.AddrPort) error) {
	rec := i.p.newRecord(false, socket.AddrPort(c.RemoteAddr()))
	rec.dst.addr = dst
	t := &tracked{}
	t.attach(c)
	if !i.track(t) {
		c.Close()
		return
	}
	up, release, err := i.connect(i.ctx, rec, dst)
	if reply != nil {
		var bind netip.AddrPort
		if up != nil {
			bind = socket.AddrPort(up.LocalAddr())
		}
		if rerr := reply(err, bind); rerr != nil && err == nil {
			err = rerr
			up.Close()
			release()
		}
	}
	if err == nil && !t.attach(up) {
		err = t.err()
		release()
	}
	if err != nil {
		i.untrack(t)
		c.Close()
		rec.finish(err)
		return
	}
	rec.open(i.ctx)
	// Copy on fresh goroutines, so the stack this one grew while
	// connecting is freed for the connection's lifetime.
	go func() {
		defer i.untrack(t)
		defer release()
		var err error
		rec.sent, rec.recv, err = hbone.Splice(context.Background(), c, up)
		if kerr := t.err(); kerr != nil {
			err = kerr
		}
		rec.finish(err)
	}()
}

// connect resolves dst and opens the upstream side. release uncounts the
// destination's load once the connection is over.
func (i *Instance) connect(ctx context.Context, rec *record, dst netip.AddrPort) (net.Conn, func(), error) {
	if !i.p.cfg.Store.IsLoaded() {
		return nil, nil, errNotLoaded
	}
	snap := i.p.cfg.Store.Snapshot()
	src, err := i.source(snap, rec.src.addr)
	if err != nil {
		rec.flags = telemetry.FlagDenied
		return nil, nil, err
	}
	rec.src = src
	if i.cfg.Pod != nil && isOwnPort(dst) && snap.WorkloadByIP(dst.Addr()) != nil {
		return nil, nil, fmt.Errorf("%w: %v", errLoop, dst)
	}
	rt, err := route.Resolve(snap, src.w, dst, i.p.loadOf)
	if err != nil {
		rec.flags = telemetry.FlagNoHealthy
		return nil, nil, err
	}
	rec.kind, rec.svc, rec.dst.w = rt.Kind, rt.Service, rt.Workload
	release := func() {}
	if rt.Workload != nil {
		release = i.p.addLoad(rt.Workload.UID)
	}
	dctx, dcancel := context.WithTimeout(ctx, i.p.cfg.ConnectTimeout)
	defer dcancel()
	var up net.Conn
	switch rt.Kind {
	case route.Passthrough:
		rec.dst.addr = rt.Target
		up, err = i.ns.Dial(dctx, rt.Target, netip.Addr{}, socketOpts(i.cfg.Mark))
	default:
		rec.dst.addr, rec.hboneAddr, rec.dst.id, rec.mtls = rt.Authority, rt.Target, rt.SANs[0], true
		up, err = i.tunnel(dctx, src, rt)
		if err == nil {
			rec.transport = hbone.TransportOf(up)
		}
	}
	if err != nil {
		release()
		var se *hbone.StatusError
		if errors.As(err, &se) && se.Code == http.StatusUnauthorized {
			rec.flags = telemetry.FlagDenied
		} else {
			rec.flags = telemetry.FlagConnect
		}
		return nil, nil, err
	}
	return up, release, nil
}

func (i *Instance) tunnel(ctx context.Context, src endpoint, rt route.Route) (net.Conn, error) {
	cert, err := i.p.cfg.Certs.Get(ctx, src.id)
	if err != nil {
		// Fail closed: no certificate, no traffic.
		return nil, fmt.Errorf("certificate for %s: %w", src.id, err)
	}
	hdr := http.Header{}
	hdr.Set("Forwarded", hbone.FormatForwarded(src.addr))
	if b := baggage(src.w, i.p.cfg.ClusterID); b != "" {
		hdr.Set("Baggage", b)
	}
	return i.dialer.Dial(ctx, &cert.TLS, rt.Target, rt.Authority, rt.SANs, hdr)
}

// source identifies the client: the pod itself in in-pod mode, else the
// local workload at its address.
func (i *Instance) source(snap *meshstate.Snapshot, addr netip.AddrPort) (endpoint, error) {
	e := endpoint{addr: addr}
	if pod := i.cfg.Pod; pod != nil {
		e.id = pod.ID
		e.w = snap.WorkloadByIP(addr.Addr())
		if e.w == nil || e.w.Identity() != pod.ID {
			e.w = snap.WorkloadByName(pod.Namespace, pod.Name)
		}
		return e, nil
	}
	w := snap.WorkloadByIP(addr.Addr())
	if !i.p.local(w) {
		return e, fmt.Errorf("%w: %v", errUnknownSource, addr.Addr())
	}
	e.w, e.id = w, w.Identity()
	return e, nil
}
