package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// DefaultMaxConcurrentStreams is the servers' default per-connection
// stream limit (that of x/net/http2's server).
const DefaultMaxConcurrentStreams = 250

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("hbone: server closed")

// ServerConfig configures a Server or QUICServer.
type ServerConfig struct {
	// TrustDomain is the only trust domain clients may come from.
	TrustDomain spiffeid.TrustDomain
	// Bundles holds the roots that client chains are verified against,
	// read at every handshake.
	Bundles x509bundle.Source
	// GetCertificate picks the certificate for a connection; ztunnel
	// answers as the destination workload, found by hello.Conn.LocalAddr().
	GetCertificate func(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
	// Handler serves the tunnels.
	Handler Handler

	// MaxConcurrentStreams per connection; 0 means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// StreamWindow and ConnWindow are the receive flow-control windows;
	// 0 means DefaultStreamWindow and DefaultConnWindow.
	StreamWindow, ConnWindow uint32
	// HandshakeTimeout bounds the TLS handshake and preface; 0 means 10s.
	HandshakeTimeout time.Duration
	// WriteByteTimeout closes an HTTP/2 connection once a write to it
	// has waited this long without the client taking any of it, failing
	// its tunnels with ErrWriteByteTimeout; 0 means
	// DefaultWriteByteTimeout, negative never. QUIC connections are not
	// affected.
	WriteByteTimeout time.Duration
	// PingInterval and PingTimeout are ClientConfig's, for the clients'
	// connections: a client that vanished leaves its tunnels open, and
	// the connections they carry to local workloads, until they fail.
	PingInterval, PingTimeout time.Duration
	// AltSvc, when set, is sent as the Alt-Svc field of every answer to
	// a CONNECT: FormatAltSvc's value advertises HBONE over QUIC (see
	// the package documentation).
	AltSvc string
	// GatherWrites lets a tunnel's write return once its frames are in
	// the connection's buffer, leaving their encryption and the system
	// call to the connection's writer goroutine, which sends after the
	// goroutines runnable at the time have run: the frames of many busy
	// tunnels then leave in one TLS record and one system call. It saves
	// CPU in a process with few threads and many tunnels (the waypoint,
	// on one thread), and costs a goroutine switch per send. A write's
	// error then shows on a later write.
	GatherWrites bool
	// QUICResetKey, 32 bytes when set, keys QUIC's stateless resets
	// (RFC 9000 §10.3). A server that kept no state of a connection (a
	// replacement after a crash) answers its packets with a reset that
	// ends it at once, rather than after the peer's idle timeout: for that
	// it must use the key its predecessor used.
	QUICResetKey []byte
	Logger       *slog.Logger
}

func (cfg *ServerConfig) check() error {
	switch {
	case cfg.TrustDomain.IsZero():
		return errors.New("hbone: ServerConfig.TrustDomain is required")
	case cfg.Bundles == nil:
		return errors.New("hbone: ServerConfig.Bundles is required")
	case cfg.QUICResetKey != nil && len(cfg.QUICResetKey) != len(quic.StatelessResetKey{}):
		return fmt.Errorf("hbone: ServerConfig.QUICResetKey has %d bytes, want %d", len(cfg.QUICResetKey), len(quic.StatelessResetKey{}))
	case cfg.GetCertificate == nil:
		return errors.New("hbone: ServerConfig.GetCertificate is required")
	case cfg.Handler == nil:
		return errors.New("hbone: ServerConfig.Handler is required")
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow == 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.WriteByteTimeout == 0 {
		cfg.WriteByteTimeout = DefaultWriteByteTimeout
	}
	cfg.PingInterval, cfg.PingTimeout = pingDefaults(cfg.PingInterval, cfg.PingTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// Server accepts HBONE over TCP: mTLS, HTTP/2, one CONNECT per tunnel.
type Server struct {
	cfg  ServerConfig
	tls  *tls.Config
	log  *slog.Logger
	ctx  context.Context // cancelled by Close
	stop context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]*h2Conn // nil value while handshaking
	shutdown  bool
	connsDone chan struct{} // closed when conns empties during shutdown

	// answer follows :status in every answer (ServerConfig.AltSvc).
	answer []hpack.HeaderField

	// goAwayTimeout overrides defaultGoAwayTimeout (tests); set before
	// Serve.
	goAwayTimeout time.Duration
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	var answer []hpack.HeaderField
	if cfg.AltSvc != "" {
		answer = []hpack.HeaderField{{Name: "alt-svc", Value: cfg.AltSvc}}
	}
	return &Server{
		answer:    answer,
		cfg:       cfg,
		tls:       serverTLSConfig("h2", cfg.TrustDomain, cfg.Bundles, cfg.GetCertificate),
		log:       cfg.Logger,
		ctx:       ctx,
		stop:      stop,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]*h2Conn),
	}, nil
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.shutdown
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		if !s.track(nc) {
			nc.Close()
			continue
		}
		go s.serveConn(nc)
	}
}

// ServeConn serves one connection accepted by the caller's own accept
// loop, as Serve serves those it accepts; it returns once the TLS
// handshake is over (the connection is then served in the background).
// After Shutdown or Close it closes nc.
func (s *Server) ServeConn(nc net.Conn) {
	if !s.track(nc) {
		nc.Close()
		return
	}
	s.serveConn(nc)
}

func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[nc] = nil
	return true
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, nc)
	if len(s.conns) == 0 && s.connsDone != nil {
		close(s.connsDone)
		s.connsDone = nil
	}
}

func (s *Server) serveConn(nc net.Conn) {
	batch := newBatchConn(fastConn(nc))
	tc, err := s.handshake(nc, batch)
	if err != nil {
		s.log.Debug("hbone: rejected connection", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		s.untrack(nc)
		return
	}
	peer, _ := peerID(tc.ConnectionState()) // verified in the handshake
	c := newH2Conn(tc, false, h2Config{
		streamWindow:     s.cfg.StreamWindow,
		connWindow:       s.cfg.ConnWindow,
		maxStreams:       s.cfg.MaxConcurrentStreams,
		logger:           s.log,
		batch:            batch,
		goAwayTimeout:    s.goAwayTimeout,
		writeByteTimeout: s.cfg.WriteByteTimeout,
		gather:           s.cfg.GatherWrites,
		pingInterval:     s.cfg.PingInterval,
		pingTimeout:      s.cfg.PingTimeout,
	})
	c.onStream = func(st *h2Stream, f *http2.MetaHeadersFrame) { s.serveStream(c, st, f, peer) }
	c.addCloseHook(func() { s.untrack(nc) })
	s.mu.Lock()
	closing := s.shutdown
	if _, ok := s.conns[nc]; ok {
		s.conns[nc] = c
	}
	s.mu.Unlock()
	if err := c.start(); err != nil {
		c.close()
		return
	}
	if closing {
		c.goAway(time.Time{})
	}
}

// handshake runs TLS and reads the HTTP/2 preface, within the timeout.
func (s *Server) handshake(nc net.Conn, under net.Conn) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	tc := tls.Server(under, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("hbone: TLS handshake: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return nil, fmt.Errorf("hbone: client did not negotiate h2 (ALPN %q)", p)
	}
	if err := readClientPreface(tc); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return tc, nil
}

func (s *Server) serveStream(c *h2Conn, st *h2Stream, f *http2.MetaHeadersFrame, peer spiffeid.ID) {
	w := &Responder{t: h2Responder{st, s.answer}}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("hbone: handler panic", "panic", p, "stack", string(debug.Stack()))
			st.abort(http2.ErrCodeInternal)
		}
		w.finish()
	}()
	r, rerr := buildRequest(f.PseudoValue("method"), f.PseudoValue("authority"),
		f.PseudoValue("scheme"), f.PseudoValue("path"), f.PseudoValue("protocol"), headerOf(f))
	if rerr != nil {
		s.log.Debug("hbone: bad request", "peer", peer, "err", rerr.err)
		w.Refuse(rerr.status)
		return
	}
	r.Peer = peer
	r.LocalAddr, r.RemoteAddr = c.nc.LocalAddr(), c.nc.RemoteAddr()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The handler's context ends with the stream, so a handler dialing an
	// upstream can give up once the client has gone.
	st.cancelWhenGone(cancel)
	s.cfg.Handler.ServeHBONE(ctx, w, r)
}

// Shutdown stops accepting, sends GOAWAY on every connection, and waits
// for their streams to finish or ctx to end (then closes them). A
// connection whose peer does not read the GOAWAY by ctx's deadline (or
// within a second, if ctx has none) is closed then.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		ln.Close()
	}
	var conns []*h2Conn
	var handshaking []net.Conn
	for nc, c := range s.conns {
		if c != nil {
			conns = append(conns, c)
		} else {
			handshaking = append(handshaking, nc)
		}
	}
	var done chan struct{}
	if len(s.conns) > 0 {
		if s.connsDone == nil {
			s.connsDone = make(chan struct{})
		}
		done = s.connsDone
	}
	s.mu.Unlock()
	// A GOAWAY not written by ctx's deadline, or within goAwayTimeout if
	// it has none, is not coming: its peer does not read.
	deadline, _ := ctx.Deadline()
	for _, c := range conns {
		c.goAway(deadline)
	}
	for _, nc := range handshaking {
		nc.Close()
	}
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes listeners and connections at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]net.Conn, 0, len(s.conns))
	for nc := range s.conns {
		conns = append(conns, nc)
	}
	s.mu.Unlock()
	s.stop()
	for _, nc := range conns {
		nc.Close()
	}
	return nil
}

// h2Responder answers a CONNECT on an HTTP/2 stream.
type h2Responder struct {
	st    *h2Stream
	extra []hpack.HeaderField
}

func (r h2Responder) refuse(status int) error { return r.st.respond(status, true, r.extra...) }

func (r h2Responder) accept() (net.Conn, error) {
	if err := r.st.respond(http.StatusOK, false, r.extra...); err != nil {
		return nil, err
	}
	return r.st, nil
}
