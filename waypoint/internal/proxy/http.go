package proxy

import (
	"github.com/skiffmesh/skiff/pkg/hbone"
)

// HTTP/2 receive windows of the connections clients open inside their
// tunnels: what a client may send ahead of the waypoint's reading it.
const (
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 1 << 20
)

// serveHTTP2 serves HTTP/2 with prior knowledge (and gRPC) on a tunnel
// with the HTTP/2 engine of HBONE's own tunnels: it carries the
// protections against abusive peers (rapid reset, control-frame and
// CONTINUATION floods, the header list size limit, writes that stall).
func (p *Proxy) serveHTTP2(t *tunnel) {
	err := hbone.ServeH2C(p.ctx, t.conn, hbone.H2CConfig{
		Handler:          p.handler(t),
		MaxHeaderBytes:   p.cfg.MaxHeaderBytes,
		StreamWindow:     h2StreamWindow,
		ConnWindow:       h2ConnWindow,
		PrefaceTimeout:   p.cfg.ReadHeaderTimeout,
		IdleTimeout:      p.cfg.IdleTimeout,
		WriteByteTimeout: p.cfg.BodyTimeout,
		Drain:            p.draining.Done(),
		Logger:           p.log,
	})
	if err != nil {
		p.cfg.Telemetry.h2Error(err)
	}
}
