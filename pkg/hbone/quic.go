package hbone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// QUIC idle timeout and keep-alives. A peer that vanished without
// closing its connections (a crashed ztunnel, UDP dropped on the way)
// leaves them silent: the idle timeout, shorter than the connect timeout,
// ends such a connection while a CONNECT waiting on it can still go over
// TCP. The keep-alives keep healthy idle connections from timing out.
const (
	quicIdleTimeout = 8 * time.Second
	quicKeepAlive   = 3 * time.Second
)

// quicConfig sets the flow-control windows of HBONE over QUIC like those
// of the TCP side; idle 0 means quicIdleTimeout.
func quicConfig(streamWindow, connWindow uint32, maxStreams int64, handshake, idle time.Duration) *quic.Config {
	if idle <= 0 {
		idle = quicIdleTimeout
	}
	return &quic.Config{
		InitialStreamReceiveWindow:     uint64(streamWindow),
		MaxStreamReceiveWindow:         uint64(streamWindow),
		InitialConnectionReceiveWindow: uint64(connWindow),
		MaxConnectionReceiveWindow:     uint64(connWindow),
		MaxIncomingStreams:             maxStreams,
		HandshakeIdleTimeout:           handshake,
		MaxIdleTimeout:                 idle,
		KeepAlivePeriod:                min(quicKeepAlive, idle/2),
	}
}

// QUICServer accepts HBONE over HTTP/3: the same CONNECT semantics and
// certificate checks as Server, on UDP, ALPN "h3".
type QUICServer struct {
	cfg ServerConfig
	h3  *http3.Server
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	lns    []*quic.Listener
	trs    []*quic.Transport
}

type quicConnKey struct{}

// NewQUICServer checks cfg and returns a QUICServer.
func NewQUICServer(cfg ServerConfig) (*QUICServer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &QUICServer{cfg: cfg, log: cfg.Logger}
	s.h3 = &http3.Server{
		Handler: http.HandlerFunc(s.serveHTTP),
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(ctx, quicConnKey{}, c)
		},
		Logger: cfg.Logger,
	}
	return s, nil
}

// Serve accepts QUIC connections on pc until Shutdown or Close. Closing
// the server closes pc.
func (s *QUICServer) Serve(pc net.PacketConn) error {
	tlsConf := serverTLSConfig(http3.NextProtoH3, s.cfg.TrustDomain, s.cfg.Bundles, s.cfg.GetCertificate)
	qconf := quicConfig(s.cfg.StreamWindow, s.cfg.ConnWindow, int64(s.cfg.MaxConcurrentStreams), s.cfg.HandshakeTimeout, 0)
	pc = tuneUDP(pc, s.log)
	// A Transport of its own, so that closing the listener (Shutdown)
	// refuses new handshakes while the open connections drain.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		pc.Close()
		return ErrServerClosed
	}
	tr := &quic.Transport{Conn: pc}
	if s.cfg.QUICResetKey != nil {
		var key quic.StatelessResetKey
		copy(key[:], s.cfg.QUICResetKey)
		tr.StatelessResetKey = &key
	}
	ln, err := tr.Listen(tlsConf, qconf)
	if err != nil {
		s.mu.Unlock()
		pc.Close()
		return fmt.Errorf("hbone: QUIC listen: %w", err)
	}
	s.lns = append(s.lns, ln)
	s.trs = append(s.trs, tr)
	s.mu.Unlock()
	err = s.h3.ServeListener(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections at once (handshakes in flight
// are refused, and the client falls back to TCP), sends GOAWAY on the
// open ones and waits for their tunnels to end, or ctx.
func (s *QUICServer) Shutdown(ctx context.Context) error {
	s.closeListeners()
	err := s.h3.Shutdown(ctx)
	s.closeTransports()
	return err
}

// Close closes everything at once.
func (s *QUICServer) Close() error {
	s.closeListeners()
	err := s.h3.Close()
	s.closeTransports()
	return err
}

func (s *QUICServer) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	s.lns = nil
}

func (s *QUICServer) closeTransports() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tr := range s.trs {
		tr.Close()
		tr.Conn.Close()
	}
	s.trs = nil
}

func (s *QUICServer) serveHTTP(rw http.ResponseWriter, hr *http.Request) {
	qc, _ := hr.Context().Value(quicConnKey{}).(*quic.Conn)
	if qc == nil || hr.TLS == nil {
		rw.WriteHeader(http.StatusInternalServerError)
		return
	}
	peer, err := peerID(*hr.TLS)
	if err != nil {
		rw.WriteHeader(http.StatusUnauthorized)
		return
	}
	if s.cfg.AltSvc != "" {
		// Also over QUIC, so that a client's memory of the
		// advertisement is kept fresh while it no longer uses TCP.
		rw.Header().Set("Alt-Svc", s.cfg.AltSvc)
	}
	w := &Responder{t: &h3Responder{rw: rw, local: qc.LocalAddr(), remote: qc.RemoteAddr()}}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("hbone: handler panic", "panic", p)
		}
		w.finish()
	}()
	// http3 rejects a classic CONNECT with :scheme or :path itself; an
	// extended CONNECT shows as a Proto other than HTTP/3.0.
	protocol := ""
	if hr.Proto != "HTTP/3.0" {
		protocol = hr.Proto
	}
	r, rerr := buildRequest(hr.Method, hr.Host, "", "", protocol, hr.Header)
	if rerr != nil {
		s.log.Debug("hbone: bad request", "peer", peer, "err", rerr.err)
		w.Refuse(rerr.status)
		return
	}
	r.Peer = peer
	r.LocalAddr, r.RemoteAddr = qc.LocalAddr(), qc.RemoteAddr()
	s.cfg.Handler.ServeHBONE(hr.Context(), w, r)
}

// h3Responder answers a CONNECT on an HTTP/3 request stream.
type h3Responder struct {
	rw            http.ResponseWriter
	local, remote net.Addr
}

func (r *h3Responder) refuse(status int) error {
	r.rw.WriteHeader(status)
	return nil
}

func (r *h3Responder) accept() (net.Conn, error) {
	r.rw.WriteHeader(http.StatusOK)
	hs, ok := r.rw.(http3.HTTPStreamer)
	if !ok {
		return nil, errors.New("hbone: HTTP/3 stream cannot be taken over")
	}
	str, err := hs.HTTPStream()
	if err != nil {
		return nil, fmt.Errorf("hbone: taking over HTTP/3 stream: %w", err)
	}
	return newQUICTunnel(str, r.local, r.remote, nil), nil
}
