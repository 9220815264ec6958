package proxy

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
)

// serveHTTP2 serves HTTP/2 with prior knowledge (and gRPC) on a tunnel,
// with net/http's HTTP/2 server: it carries the protections against
// abusive peers (rapid reset, CONTINUATION floods, the header list size
// limit). One http.Server serves the one connection.
func (p *Proxy) serveHTTP2(t *tunnel) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.h2.serve(t, w, r)
		}),
		Protocols:         &protos,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			SendPingTimeout:      p.cfg.IdleTimeout / 2,
			WriteByteTimeout:     p.cfg.BodyTimeout,
			CountError:           p.cfg.Telemetry.h2Error,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	ln := newOneConnListener(t.conn)
	stop := context.AfterFunc(p.ctx, func() { srv.Close() })
	defer stop()
	srv.Serve(ln)
}

// oneConnListener hands one connection to an http.Server, then blocks
// Accept until that connection is closed, so that Serve returns with it.
type oneConnListener struct {
	conn   net.Conn
	once   sync.Once
	mu     sync.Mutex
	taken  bool
	closed chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{})}
	l.conn = &notifyCloseConn{Conn: c, onClose: l.close}
	return l
}

var errListenerDone = errors.New("connection served")

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.taken {
		l.taken = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, errListenerDone
}

func (l *oneConnListener) close() { l.once.Do(func() { close(l.closed) }) }

// Close ends Accept; the connection itself closes with the server.
func (l *oneConnListener) Close() error { l.close(); return nil }

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// notifyCloseConn reports its closing.
type notifyCloseConn struct {
	net.Conn
	onClose func()
}

func (c *notifyCloseConn) Close() error {
	err := c.Conn.Close()
	c.onClose()
	return err
}
