package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// QUICClient dials HBONE over HTTP/3, pooling QUIC connections like
// Client pools TCP ones. All connections share one UDP socket.
type QUICClient struct {
	cfg  ClientConfig
	pool *pool[*quicConn]
	tr   *quic.Transport
	h3   *http3.Transport
}

// NewQUICClient checks cfg and opens the client's UDP socket.
func NewQUICClient(cfg ClientConfig) (*QUICClient, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("hbone: opening UDP socket: %w", err)
	}
	return &QUICClient{
		cfg:  cfg,
		pool: newPool[*quicConn](cfg.MaxStreamsPerConn, cfg.IdleTimeout, cfg.HandshakeTimeout),
		tr:   &quic.Transport{Conn: udp},
		h3:   &http3.Transport{DisableCompression: true, Logger: cfg.Logger},
	}, nil
}

// Stats reports connection counts.
func (c *QUICClient) Stats() ClientStats {
	return ClientStats{Dialed: c.pool.dialed.Load(), Open: c.pool.open()}
}

// Close closes every connection and the UDP socket.
func (c *QUICClient) Close() error {
	c.pool.close()
	return c.tr.Close()
}

// quicConn is a pooled HTTP/3 client connection.
type quicConn struct {
	qc    *quic.Conn
	cc    *http3.ClientConn
	limit int
}

func (q *quicConn) usable() bool    { return q.qc.Context().Err() == nil }
func (q *quicConn) maxStreams() int { return q.limit }
func (q *quicConn) close() {
	q.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

func (q *quicConn) addCloseHook(fn func()) {
	context.AfterFunc(q.qc.Context(), fn)
}

// Dial implements Dialer.
func (c *QUICClient) Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
	expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error) {
	key, err := poolKey(src, dst, expectedSANs)
	if err != nil {
		return nil, err
	}
	if !authority.IsValid() || authority.Port() == 0 {
		return nil, fmt.Errorf("hbone: invalid authority %v", authority)
	}
	pc, err := c.pool.get(ctx, key, func(ctx context.Context) (*quicConn, error) {
		return c.dialConn(ctx, src, dst, expectedSANs)
	})
	if err != nil {
		return nil, err
	}
	var once sync.Once
	release := func() { once.Do(func() { c.pool.release(pc) }) }
	rs, err := pc.c.cc.OpenRequestStream(ctx)
	if err != nil {
		release()
		return nil, fmt.Errorf("hbone: opening HTTP/3 stream: %w", err)
	}
	abort := func() {
		rs.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		rs.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		release()
	}
	auth := authority.String()
	req := &http.Request{
		Method: http.MethodConnect,
		Host:   auth,
		URL:    &url.URL{Host: auth},
		Header: hdr,
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if err := rs.SendRequestHeader(req); err != nil {
		abort()
		return nil, fmt.Errorf("hbone: sending CONNECT: %w", err)
	}
	type result struct {
		res *http.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := rs.ReadResponse()
		done <- result{res, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		abort()
		<-done
		return nil, fmt.Errorf("hbone: waiting for the CONNECT response: %w", ctx.Err())
	}
	if r.err != nil {
		abort()
		return nil, fmt.Errorf("hbone: reading CONNECT response: %w", r.err)
	}
	if r.res.StatusCode != http.StatusOK {
		abort()
		return nil, &StatusError{Code: r.res.StatusCode}
	}
	return newQUICTunnel(rs, pc.c.qc.LocalAddr(), pc.c.qc.RemoteAddr(), release), nil
}

func (c *QUICClient) dialConn(ctx context.Context, src *tls.Certificate, dst netip.AddrPort, expected []spiffeid.ID) (*quicConn, error) {
	addr := net.UDPAddrFromAddrPort(dst)
	tlsConf := clientTLSConfig(http3.NextProtoH3, src, c.cfg.Bundles, expected)
	qconf := quicConfig(c.cfg.StreamWindow, c.cfg.ConnWindow, 0, c.cfg.HandshakeTimeout)
	qc, err := c.tr.Dial(ctx, addr, tlsConf, qconf)
	if err != nil {
		return nil, &DialError{Addr: addr.String(), Err: err}
	}
	c.pool.dialed.Add(1)
	return &quicConn{qc: qc, cc: c.h3.NewClientConn(qc), limit: c.cfg.MaxStreamsPerConn}, nil
}

// FallbackDialer tries HBONE over QUIC and falls back to TCP when the QUIC
// connection cannot be set up (nothing on UDP, handshake blocked). A
// destination whose QUIC dial failed goes straight to TCP for FailureTTL.
// Answers over QUIC (refusals, a wrong server identity) are final.
type FallbackDialer struct {
	QUIC *QUICClient
	TCP  *Client
	// FailureTTL is how long a QUIC failure is remembered; 0 means 5m.
	FailureTTL time.Duration

	mu     sync.Mutex
	failed map[netip.AddrPort]time.Time
}

// Dial implements Dialer.
func (d *FallbackDialer) Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
	expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error) {
	if !d.quicBroken(dst) {
		c, err := d.QUIC.Dial(ctx, src, dst, authority, expectedSANs, hdr)
		var de *DialError
		var sm *SANMismatchError
		if err == nil || !errors.As(err, &de) || errors.As(err, &sm) || ctx.Err() != nil {
			return c, err
		}
		d.QUIC.cfg.Logger.Info("hbone: QUIC unavailable, using TCP", "dst", dst, "err", err)
		d.markBroken(dst)
	}
	return d.TCP.Dial(ctx, src, dst, authority, expectedSANs, hdr)
}

func (d *FallbackDialer) quicBroken(dst netip.AddrPort) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	until, ok := d.failed[dst]
	if ok && time.Now().After(until) {
		delete(d.failed, dst)
		return false
	}
	return ok
}

func (d *FallbackDialer) markBroken(dst netip.AddrPort) {
	ttl := d.FailureTTL
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed == nil {
		d.failed = make(map[netip.AddrPort]time.Time)
	}
	d.failed[dst] = time.Now().Add(ttl)
}
