package proxy

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// serveHTTP2 serves HTTP/2 with prior knowledge (and gRPC) on a tunnel,
// with net/http's HTTP/2 server: it carries the protections against
// abusive peers (rapid reset, CONTINUATION floods, the header list size
// limit). One http.Server serves the one connection.
func (p *Proxy) serveHTTP2(t *tunnel) {
	var served atomic.Bool // a stream of this connection has been answered
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.h2.serve(t, w, r)
			served.Store(true)
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
	// A drain sends a GOAWAY and closes the connection once its streams
	// are done. It is armed once the server holds the connection: a
	// Shutdown before that would drop the connection unserved. A
	// connection that comes during the drain gets its GOAWAY when it is
	// idle after serving a stream (it is also "idle" as it starts), so
	// that a client is never sent away before one of its requests is
	// answered.
	var shutdown sync.Once
	goAway := func() { shutdown.Do(func() { go srv.Shutdown(p.ctx) }) }
	var stopDrain atomic.Pointer[func() bool]
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		switch {
		case s == http.StateNew && p.draining.Err() == nil:
			f := context.AfterFunc(p.draining, goAway)
			stopDrain.Store(&f)
		case s == http.StateIdle && served.Load() && p.draining.Err() != nil:
			goAway()
		}
	}
	srv.Serve(ln)
	if f := stopDrain.Load(); f != nil {
		(*f)()
	}
	// Serve returns at a Shutdown while the connection may still carry
	// streams: it is over when it is closed.
	ln.wait()
}

// oneConnListener hands one connection to an http.Server, then blocks
// Accept until that connection is closed or the listener is, so that
// Serve returns with it.
type oneConnListener struct {
	conn       net.Conn
	mu         sync.Mutex
	taken      bool
	closeOnce  sync.Once
	closed     chan struct{} // by Close
	connOnce   sync.Once
	connClosed chan struct{} // with the connection
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{}), connClosed: make(chan struct{})}
	l.conn = &notifyCloseConn{Conn: c, onClose: func() { l.connOnce.Do(func() { close(l.connClosed) }) }}
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
	select {
	case <-l.closed:
	case <-l.connClosed:
	}
	return nil, errListenerDone
}

// Close ends Accept; the connection itself closes with the server.
func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// wait returns once the connection Accept handed out is closed, at once
// if it handed out none.
func (l *oneConnListener) wait() {
	l.mu.Lock()
	taken := l.taken
	l.mu.Unlock()
	if taken {
		<-l.connClosed
	}
}

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
