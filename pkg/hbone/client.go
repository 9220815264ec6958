package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// Client defaults. Istio's ztunnel also opens a new connection at 100
// streams.
const (
	DefaultMaxStreamsPerConn = 100
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultHandshakeTimeout  = 10 * time.Second
)

// Dialer opens HBONE tunnels; Client, QUICClient and TransportDialer
// implement it.
type Dialer interface {
	// Dial opens a tunnel to authority through the HBONE server at dst,
	// presenting src, and accepting only a server whose SPIFFE ID is in
	// expectedSANs. hdr is sent with the CONNECT (forwarded, baggage,
	// traceparent). A refusal is a *StatusError; a wrong server identity
	// a *SANMismatchError; a transport failure a *DialError.
	Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
		expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error)
}

// ClientConfig configures a Client or QUICClient.
type ClientConfig struct {
	// Bundles holds the roots server chains are verified against.
	Bundles x509bundle.Source
	// MaxStreamsPerConn caps streams per connection (the server's
	// SETTINGS may lower it); 0 means DefaultMaxStreamsPerConn.
	MaxStreamsPerConn int
	// IdleTimeout closes a connection that has had no stream for this
	// long; 0 means DefaultIdleTimeout, negative never.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds connecting plus the TLS handshake; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// StreamWindow and ConnWindow are the receive windows; 0 means
	// DefaultStreamWindow and DefaultConnWindow.
	StreamWindow, ConnWindow uint32
	// WriteByteTimeout closes an HTTP/2 connection once a write to it
	// has waited this long without the server taking any of it, failing
	// its tunnels with ErrWriteByteTimeout; 0 means
	// DefaultWriteByteTimeout, negative never. QUIC connections are not
	// affected.
	WriteByteTimeout time.Duration
	// PingInterval sends a PING on an HTTP/2 connection that has read
	// nothing for this long, and PingTimeout closes it, failing its
	// tunnels with ErrPeerSilent, if nothing at all comes in that time
	// after the PING; 0 means DefaultPingInterval and DefaultPingTimeout,
	// negative never. QUIC connections have their idle timeout instead.
	PingInterval, PingTimeout time.Duration
	// DialContext opens TCP connections (to set socket marks, say); nil
	// means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens the QUIC client's UDP socket (in a pod's
	// network namespace, with ztunnel's socket mark, say); nil means
	// net.ListenUDP on any address.
	ListenPacket func() (net.PacketConn, error)
	// GatherWrites is ServerConfig.GatherWrites, for the connections the
	// client dials.
	GatherWrites bool
	Logger       *slog.Logger
}

func (cfg *ClientConfig) check() error {
	if cfg.Bundles == nil {
		return errors.New("hbone: ClientConfig.Bundles is required")
	}
	if cfg.MaxStreamsPerConn <= 0 {
		cfg.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow == 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.WriteByteTimeout == 0 {
		cfg.WriteByteTimeout = DefaultWriteByteTimeout
	}
	cfg.PingInterval, cfg.PingTimeout = pingDefaults(cfg.PingInterval, cfg.PingTimeout)
	if cfg.DialContext == nil {
		cfg.DialContext = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// Client dials HBONE over TCP, pooling one mTLS HTTP/2 connection per
// (source identity, expected server identities, server address).
type Client struct {
	cfg  ClientConfig
	pool *pool[*h2Conn]

	// goAwayTimeout overrides defaultGoAwayTimeout (tests); set before
	// Dial.
	goAwayTimeout time.Duration
}

// ClientStats are a client's connection counts.
type ClientStats struct {
	// Dialed counts transport connections ever established.
	Dialed uint64
	// Open counts connections in the pool now.
	Open int
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Client{
		cfg:  cfg,
		pool: newPool[*h2Conn](cfg.MaxStreamsPerConn, cfg.IdleTimeout, cfg.HandshakeTimeout),
	}, nil
}

// Stats reports connection counts.
func (c *Client) Stats() ClientStats {
	return ClientStats{Dialed: c.pool.dialed.Load(), Open: c.pool.open()}
}

// Close closes every pooled connection, and tunnels on them.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// poolKey identifies connections that may share streams.
func poolKey(src *tls.Certificate, dst netip.AddrPort, expected []spiffeid.ID) (string, error) {
	id, err := certID(src)
	if err != nil {
		return "", err
	}
	if len(expected) == 0 {
		return "", errors.New("hbone: no expected server identities")
	}
	sans := make([]string, len(expected))
	for i, e := range expected {
		sans[i] = e.String()
	}
	slices.Sort(sans)
	return id.String() + "|" + strings.Join(sans, ",") + "|" + dst.String(), nil
}

const maxAttempts = 3

// tcpTarget is where a Dial goes: the pool key and how to dial it.
type tcpTarget struct {
	key  string
	dial func(context.Context) (*h2Conn, error)
}

func (c *Client) target(src *tls.Certificate, dst, authority netip.AddrPort, expectedSANs []spiffeid.ID) (tcpTarget, error) {
	key, err := poolKey(src, dst, expectedSANs)
	if err != nil {
		return tcpTarget{}, err
	}
	if !authority.IsValid() || authority.Port() == 0 {
		return tcpTarget{}, fmt.Errorf("hbone: invalid authority %v", authority)
	}
	return tcpTarget{key: key, dial: func(ctx context.Context) (*h2Conn, error) {
		return c.dialConn(ctx, src, dst, expectedSANs)
	}}, nil
}

// Dial implements Dialer.
func (c *Client) Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
	expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error) {
	t, err := c.target(src, dst, authority, expectedSANs)
	if err != nil {
		return nil, err
	}
	pc, err := c.pool.get(ctx, t.key, t.dial)
	if err != nil {
		return nil, err
	}
	conn, _, err := c.dialOn(ctx, t, pc, authority, hdr)
	return conn, err
}

// dialOn opens the tunnel on pc, whose slot it takes over; a CONNECT
// refused before processing (REFUSED_STREAM, a connection going away)
// is retried on another connection. It returns the response's header
// fields, those of a refusal too.
func (c *Client) dialOn(ctx context.Context, t tcpTarget, pc *pooled[*h2Conn], authority netip.AddrPort, hdr http.Header) (net.Conn, http.Header, error) {
	for attempt := 1; ; attempt++ {
		conn, rh, err := c.connect(ctx, pc, authority, hdr)
		var re retryableError
		if !errors.As(err, &re) || attempt >= maxAttempts || ctx.Err() != nil {
			return conn, rh, err
		}
		if pc, err = c.pool.get(ctx, t.key, t.dial); err != nil {
			return nil, nil, err
		}
	}
}

// connect sends the CONNECT on pc and waits for the answer.
func (c *Client) connect(ctx context.Context, pc *pooled[*h2Conn], authority netip.AddrPort, hdr http.Header) (net.Conn, http.Header, error) {
	st, err := pc.c.openStream(ctx, authority.String(), hdr, func() { c.pool.release(pc) })
	if err != nil {
		return nil, nil, err
	}
	select {
	case <-st.respCh:
	case <-ctx.Done():
		st.abort(http2.ErrCodeCancel)
		return nil, nil, fmt.Errorf("hbone: waiting for the CONNECT response: %w", ctx.Err())
	}
	pc.c.mu.Lock()
	status, reset, rh := st.status, st.reset, st.header
	pc.c.mu.Unlock()
	if status == 0 {
		var sr streamResetError
		if errors.As(reset, &sr) && sr.code == http2.ErrCodeRefusedStream {
			return nil, nil, retryableError{reset}
		}
		return nil, nil, reset
	}
	if status != http.StatusOK {
		st.Close()
		return nil, rh, &StatusError{Code: status}
	}
	return st, rh, nil
}

// dialConn connects, handshakes and waits for the server's SETTINGS, so
// its stream limit is known before the connection is shared.
func (c *Client) dialConn(ctx context.Context, src *tls.Certificate, dst netip.AddrPort, expected []spiffeid.ID) (*h2Conn, error) {
	addr := dst.String()
	nc, err := c.cfg.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	c.pool.dialed.Add(1)
	batch := newBatchConn(fastConn(nc))
	tc := tls.Client(batch, clientTLSConfig("h2", src, c.cfg.Bundles, expected))
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, &DialError{Addr: addr, Err: fmt.Errorf("TLS handshake: %w", err)}
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, &DialError{Addr: addr, Err: fmt.Errorf("server did not negotiate h2 (ALPN %q)", p)}
	}
	h := newH2Conn(tc, true, h2Config{
		streamWindow:     c.cfg.StreamWindow,
		connWindow:       c.cfg.ConnWindow,
		logger:           c.cfg.Logger,
		batch:            batch,
		goAwayTimeout:    c.goAwayTimeout,
		writeByteTimeout: c.cfg.WriteByteTimeout,
		gather:           c.cfg.GatherWrites,
		pingInterval:     c.cfg.PingInterval,
		pingTimeout:      c.cfg.PingTimeout,
	})
	if err := h.start(); err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	select {
	case <-h.settingsSeen:
	case <-h.done:
		return nil, &DialError{Addr: addr, Err: h.err}
	case <-ctx.Done():
		h.close()
		return nil, &DialError{Addr: addr, Err: ctx.Err()}
	}
	return h, nil
}
