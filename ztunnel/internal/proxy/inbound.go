package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/ztunnel/internal/socket"
)

func socketOpts(mark uint32) socket.Options { return socket.Options{Mark: mark} }

// inboundError is a refused inbound connection and its HBONE status.
type inboundError struct {
	status int
	err    error
}

func (e *inboundError) Error() string { return e.err.Error() }
func (e *inboundError) Unwrap() error { return e.err }

func refuse(status int, format string, args ...any) *inboundError {
	return &inboundError{status: status, err: fmt.Errorf(format, args...)}
}

// destination finds the workload an inbound connection is for. In-pod,
// it must be this pod, addressed by its own IP (local is the address the
// connection arrived on); in shared mode, a local workload.
func (i *Instance) destination(snap *meshstate.Snapshot, dst, local netip.AddrPort) (*meshstate.Workload, *inboundError) {
	if isOwnPort(dst) {
		return nil, refuse(http.StatusBadRequest, "destination %v is a ztunnel port", dst)
	}
	w := snap.WorkloadByIP(dst.Addr())
	if pod := i.cfg.Pod; pod != nil {
		if dst.Addr() != local.Addr() {
			return nil, refuse(http.StatusBadRequest, "destination %v is not this pod's address %v", dst.Addr(), local.Addr())
		}
		if w == nil {
			return nil, refuse(http.StatusServiceUnavailable, "no workload known at %v yet", dst.Addr())
		}
		if w.Identity() != pod.ID {
			return nil, refuse(http.StatusBadRequest, "workload at %v is %s, not this pod (%s)", dst.Addr(), w.Identity(), pod.ID)
		}
		return w, nil
	}
	if !i.p.local(w) {
		return nil, refuse(http.StatusBadRequest, "no local workload at %v", dst.Addr())
	}
	return w, nil
}

// serveHBONE handles one tunnel to a workload served here.
func (i *Instance) serveHBONE(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
	src := socket.AddrPort(r.RemoteAddr)
	rec := i.p.newRecord(true, src)
	rec.mtls = true
	rec.transport = r.Transport()
	rec.src.id = r.Peer
	rec.dst.addr = r.Authority
	client, app, t, err := i.admit(ctx, rec, r.Authority, socket.AddrPort(r.LocalAddr), r.Peer, w.Accept)
	if err != nil {
		var ie *inboundError
		if errors.As(err, &ie) {
			w.Refuse(ie.status)
		}
		return
	}
	// Copy on a fresh goroutine and let this one end: its stack grew while
	// connecting (and hbone's frames sit below it), and a goroutine's
	// stack stays as deep as it is while it waits, for the connection's
	// lifetime.
	w.Detach()
	rec.open(context.Background())
	go i.pump(rec, t, client, app)
}

// handlePlaintext serves a connection from outside the mesh, redirected
// by TPROXY: its local address is where it was headed.
func (i *Instance) handlePlaintext(c *net.TCPConn) {
	rec := i.p.newRecord(true, socket.AddrPort(c.RemoteAddr()))
	dst := socket.AddrPort(c.LocalAddr())
	rec.dst.addr = dst
	accept := func() (net.Conn, error) { return c, nil }
	client, app, t, err := i.admit(i.ctx, rec, dst, dst, rec.src.id, accept)
	if err != nil {
		c.Close()
		return
	}
	rec.open(i.ctx)
	// Fresh goroutines: this one's stack grew while connecting.
	go i.pump(rec, t, client, app)
}

// pump copies between an admitted connection's two sides until both end.
func (i *Instance) pump(rec *record, t *tracked, client, app net.Conn) {
	defer i.untrack(t)
	var err error
	rec.sent, rec.recv, err = hbone.Splice(context.Background(), client, app)
	if kerr := t.err(); kerr != nil {
		err = kerr
	}
	rec.finish(err)
}

// admit authorizes a connection to dst, connects to the application and
// answers the client with accept. On success the connection is tracked
// and the caller pumps it; on failure it is finished and untracked, and an
// *inboundError tells the caller to refuse with its status (other errors
// mean the client was answered or went away).
func (i *Instance) admit(ctx context.Context, rec *record, dst, local netip.AddrPort, peer spiffeid.ID, accept func() (net.Conn, error)) (client, app net.Conn, t *tracked, err error) {
	pc := policy.Conn{SrcIP: rec.src.addr.Addr(), DstIP: dst.Addr(), DstPort: dst.Port(), Peer: peer}
	t = &tracked{inbound: true, pc: pc}
	if !i.track(t) {
		err := refuse(http.StatusServiceUnavailable, "%w", errInstanceClosed)
		rec.finish(err)
		return nil, nil, nil, err
	}
	fail := func(err error) (net.Conn, net.Conn, *tracked, error) {
		i.untrack(t)
		rec.finish(err)
		return nil, nil, nil, err
	}
	if !i.p.cfg.Store.IsLoaded() {
		return fail(refuse(http.StatusServiceUnavailable, "%w", errNotLoaded))
	}
	// Tracked before the snapshot is read: a policy change from here on
	// re-evaluates this connection.
	snap := i.p.cfg.Store.Snapshot()
	if sw := snap.WorkloadByIP(rec.src.addr.Addr()); sw != nil && (peer.IsZero() || sw.Identity() == peer) {
		rec.src.w = sw
	}
	dw, ierr := i.destination(snap, dst, local)
	if ierr != nil {
		return fail(ierr)
	}
	rec.dst.w, rec.dst.id = dw, dw.Identity()
	rec.svc = inboundService(snap, dw, dst.Port())
	t.setDestination(dw.UID)
	if d := policy.Evaluate(snap.PoliciesFor(dw), pc); !d.Allowed {
		rec.flags = telemetry.FlagDenied
		return fail(refuse(http.StatusUnauthorized, "denied by authorization policy %s (%s)", d.Policy, d.Reason))
	}

	dctx, dcancel := context.WithTimeout(ctx, i.p.cfg.ConnectTimeout)
	up, derr := i.dialApp(dctx, dst, rec.src.addr.Addr())
	dcancel()
	if derr != nil {
		rec.flags = telemetry.FlagConnect
		return fail(refuse(http.StatusServiceUnavailable, "connecting to application %v: %w", dst, derr))
	}
	if !t.attach(up) {
		status := http.StatusServiceUnavailable
		if errors.Is(t.err(), errPolicyChanged) {
			status = http.StatusUnauthorized
		}
		return fail(refuse(status, "%w", t.err()))
	}
	c, aerr := accept()
	if aerr != nil {
		up.Close()
		return fail(aerr)
	}
	if !t.attach(c) {
		return fail(t.err())
	}
	return c, up, t, nil
}

// dialApp connects to the application inside the namespace, from the
// client's own address when transparent.
func (i *Instance) dialApp(ctx context.Context, dst netip.AddrPort, src netip.Addr) (*net.TCPConn, error) {
	o := socket.Options{Mark: i.cfg.Mark}
	from := netip.Addr{}
	if i.cfg.Transparent && src.IsValid() && src != dst.Addr() {
		o.Transparent = true
		from = src
	}
	return i.ns.Dial(ctx, dst, from, o)
}

// inboundService guesses, for metrics and the access log, which service a
// connection to port of w came through: the first of w's services, by key,
// with that target port, as Istio's ztunnel does. The tunnel names only the
// workload's address, and the label must not be the address either: pods
// come and go, and every address would stay a series of its own.
func inboundService(snap *meshstate.Snapshot, w *meshstate.Workload, port uint16) *meshstate.Service {
	var found *meshstate.Service
	var foundKey string
	for key, ports := range w.Services {
		if found != nil && foundKey < key {
			continue
		}
		if svc := snap.Service(key); svc != nil && servesPort(svc, ports, port) {
			found, foundKey = svc, key
		}
	}
	return found
}

// servesPort reports whether svc targets port on a workload whose ports
// for it are ports (they resolve named target ports).
func servesPort(svc *meshstate.Service, ports []meshstate.Port, port uint16) bool {
	for _, p := range svc.Ports {
		if p.TargetPort == port {
			return true
		}
	}
	for _, p := range ports {
		if p.TargetPort == port {
			return true
		}
	}
	return false
}
