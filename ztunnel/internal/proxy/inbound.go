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
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/ztunnel/internal/socket"
	"github.com/skiffmesh/skiff/ztunnel/internal/state"
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
func (i *Instance) destination(snap *state.Snapshot, dst, local netip.AddrPort) (*state.Workload, *inboundError) {
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
	rec.src.id = r.Peer
	rec.dst.addr = r.Authority
	if err := i.inbound(ctx, rec, r.Authority, socket.AddrPort(r.LocalAddr), r.Peer, w.Accept); err != nil {
		status := http.StatusServiceUnavailable
		var ie *inboundError
		if errors.As(err, &ie) {
			status = ie.status
		}
		w.Refuse(status)
	}
}

// handlePlaintext serves a connection from outside the mesh, redirected
// by TPROXY: its local address is where it was headed.
func (i *Instance) handlePlaintext(c *net.TCPConn) {
	rec := i.p.newRecord(true, socket.AddrPort(c.RemoteAddr()))
	dst := socket.AddrPort(c.LocalAddr())
	rec.dst.addr = dst
	accept := func() (net.Conn, error) { return c, nil }
	if err := i.inbound(i.ctx, rec, dst, dst, rec.src.id, accept); err != nil {
		c.Close()
	}
}

// inbound authorizes a connection to dst, connects to the application and
// copies. accept answers the client and returns its side; an error
// returned before accept was called tells the caller to refuse.
func (i *Instance) inbound(ctx context.Context, rec *record, dst, local netip.AddrPort, peer spiffeid.ID, accept func() (net.Conn, error)) (err error) {
	cctx, cancel := context.WithCancelCause(i.ctx)
	defer cancel(nil)
	pc := policy.Conn{SrcIP: rec.src.addr.Addr(), DstIP: dst.Addr(), DstPort: dst.Port(), Peer: peer}
	t := &tracked{inbound: true, pc: pc, cancel: cancel}
	if !i.track(t) {
		err := refuse(http.StatusServiceUnavailable, "%w", errInstanceClosed)
		rec.finish(err)
		return err
	}
	defer i.untrack(t)
	// Tracked before the snapshot is read: a policy change from here on
	// re-evaluates this connection.
	snap := i.p.cfg.Store.Snapshot()
	if sw := snap.WorkloadByIP(rec.src.addr.Addr()); sw != nil && (peer.IsZero() || sw.Identity() == peer) {
		rec.src.w = sw
	}
	dw, ierr := i.destination(snap, dst, local)
	if ierr != nil {
		rec.finish(ierr)
		return ierr
	}
	rec.dst.w, rec.dst.id = dw, dw.Identity()
	t.dstUID = dw.UID
	if d := policy.Evaluate(snap.PoliciesFor(dw), pc); !d.Allowed {
		rec.flags = telemetry.FlagDenied
		err := refuse(http.StatusUnauthorized, "denied by authorization policy %s (%s)", d.Policy, d.Reason)
		rec.finish(err)
		return err
	}

	dctx, dcancel := context.WithTimeout(ctx, i.p.cfg.ConnectTimeout)
	app, derr := i.dialApp(dctx, dst, rec.src.addr.Addr())
	dcancel()
	if derr != nil {
		rec.flags = telemetry.FlagConnect
		err := refuse(http.StatusServiceUnavailable, "connecting to application %v: %w", dst, derr)
		rec.finish(err)
		return err
	}
	client, aerr := accept()
	if aerr != nil {
		app.Close()
		rec.finish(aerr)
		return nil // answered (or gone): nothing more to refuse
	}
	rec.open(cctx)
	var serr error
	rec.sent, rec.recv, serr = hbone.Splice(cctx, client, app)
	if cctx.Err() != nil {
		serr = context.Cause(cctx)
	}
	rec.finish(serr)
	return nil
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
