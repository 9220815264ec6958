package proxy

import "github.com/skiffmesh/skiff/waypoint/internal/http1"

// serveHTTP1 serves HTTP/1.1 (and 1.0) on a tunnel with the waypoint's
// strict parser: a message it rejects never reaches a backend.
func (p *Proxy) serveHTTP1(t *tunnel) {
	err := http1.Serve(p.ctx, t.conn, http1.ServerConfig{
		Handler:           p.handler(t),
		Limits:            http1.Limits{MaxHeaderBytes: p.cfg.MaxHeaderBytes, MaxHeaderCount: p.cfg.MaxHeaderCount},
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ReadTimeout:       p.cfg.BodyTimeout,
		WriteTimeout:      p.cfg.BodyTimeout,
		Drain:             p.draining,
		Logger:            p.log,
	})
	if err != nil {
		p.cfg.Telemetry.h1Error(err)
	}
}
