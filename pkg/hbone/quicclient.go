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
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// QUICClient dials HBONE over HTTP/3, pooling QUIC connections like
// Client pools TCP ones. All connections share one UDP socket.
type QUICClient struct {
	cfg ClientConfig
	// idleTimeout overrides quicIdleTimeout (tests); set before Dial.
	idleTimeout time.Duration
	pool        *pool[*quicConn]
	tr          *quic.Transport
	h3          *http3.Transport
}

// NewQUICClient checks cfg and opens the client's UDP socket.
func NewQUICClient(cfg ClientConfig) (*QUICClient, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	listen := cfg.ListenPacket
	if listen == nil {
		listen = func() (net.PacketConn, error) { return net.ListenUDP("udp", nil) }
	}
	udp, err := listen()
	if err != nil {
		return nil, fmt.Errorf("hbone: opening UDP socket: %w", err)
	}
	return &QUICClient{
		cfg:  cfg,
		pool: newPool[*quicConn](cfg.MaxStreamsPerConn, cfg.IdleTimeout, cfg.HandshakeTimeout),
		tr:   &quic.Transport{Conn: tuneUDP(udp, cfg.Logger)},
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
	// broken is set once a request stream could not be opened (the
	// server sent GOAWAY, say): the pool hands the connection out no
	// more.
	broken atomic.Bool
}

func (q *quicConn) usable() bool    { return q.qc.Context().Err() == nil && !q.broken.Load() }
func (q *quicConn) maxStreams() int { return q.limit }
func (q *quicConn) close() {
	q.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

func (q *quicConn) addCloseHook(fn func()) {
	context.AfterFunc(q.qc.Context(), fn)
}

// quicTarget is where a Dial goes: the pool key and how to dial it.
type quicTarget struct {
	key  string
	dial func(context.Context) (*quicConn, error)
}

func (c *QUICClient) target(src *tls.Certificate, dst, authority netip.AddrPort, expectedSANs []spiffeid.ID) (quicTarget, error) {
	key, err := poolKey(src, dst, expectedSANs)
	if err != nil {
		return quicTarget{}, err
	}
	if !authority.IsValid() || authority.Port() == 0 {
		return quicTarget{}, fmt.Errorf("hbone: invalid authority %v", authority)
	}
	return quicTarget{key: key, dial: func(ctx context.Context) (*quicConn, error) {
		return c.dialConn(ctx, src, dst, expectedSANs)
	}}, nil
}

// Dial implements Dialer.
func (c *QUICClient) Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
	expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error) {
	t, err := c.target(src, dst, authority, expectedSANs)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		pc, err := c.pool.get(ctx, t.key, t.dial)
		if err != nil {
			return nil, err
		}
		conn, _, err := c.connect(ctx, pc, authority, hdr)
		var re retryableError
		if !errors.As(err, &re) || attempt >= maxAttempts || ctx.Err() != nil {
			return conn, err
		}
	}
}

// connect opens the tunnel on pc, whose slot it takes over, and returns
// the response's header fields, those of a refusal too.
func (c *QUICClient) connect(ctx context.Context, pc *pooled[*quicConn], authority netip.AddrPort, hdr http.Header) (net.Conn, http.Header, error) {
	var once sync.Once
	release := func() { once.Do(func() { c.pool.release(pc) }) }
	rs, err := pc.c.cc.OpenRequestStream(ctx)
	if err != nil {
		pc.c.broken.Store(true)
		release()
		// Nothing was sent: the tunnel may be tried elsewhere.
		return nil, nil, retryableError{fmt.Errorf("hbone: opening HTTP/3 stream: %w", err)}
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
		err = fmt.Errorf("hbone: sending CONNECT: %w", err)
		if rejected(err) {
			pc.c.broken.Store(true)
			return nil, nil, retryableError{err}
		}
		return nil, nil, err
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
		return nil, nil, fmt.Errorf("hbone: waiting for the CONNECT response: %w", ctx.Err())
	}
	if r.err != nil {
		abort()
		err := fmt.Errorf("hbone: reading CONNECT response: %w", r.err)
		if rejected(err) || gone(err) {
			pc.c.broken.Store(true)
			return nil, nil, retryableError{err}
		}
		return nil, nil, err
	}
	if r.res.StatusCode != http.StatusOK {
		abort()
		return nil, r.res.Header, &StatusError{Code: r.res.StatusCode}
	}
	return newQUICTunnel(rs, pc.c.qc.LocalAddr(), pc.c.qc.RemoteAddr(), release), r.res.Header, nil
}

// rejected reports whether the server refused a request stream without
// processing it (H3_REQUEST_REJECTED, after its GOAWAY): the tunnel may
// be tried elsewhere.
func rejected(err error) bool {
	var se *quic.StreamError
	return errors.As(err, &se) && se.ErrorCode == quic.StreamErrorCode(http3.ErrCodeRequestRejected)
}

// gone reports whether a request got no answer because its connection
// died in silence (idle timeout) or its peer lost the connection's state
// (stateless reset, a restarted peer): the peer cannot be answering it,
// and the tunnel may be tried elsewhere.
func gone(err error) bool {
	var idle *quic.IdleTimeoutError
	var reset *quic.StatelessResetError
	return errors.As(err, &idle) || errors.As(err, &reset)
}

func (c *QUICClient) dialConn(ctx context.Context, src *tls.Certificate, dst netip.AddrPort, expected []spiffeid.ID) (*quicConn, error) {
	addr := net.UDPAddrFromAddrPort(dst)
	tlsConf := clientTLSConfig(http3.NextProtoH3, src, c.cfg.Bundles, expected)
	qconf := quicConfig(c.cfg.StreamWindow, c.cfg.ConnWindow, 0, c.cfg.HandshakeTimeout, c.idleTimeout)
	qc, err := c.tr.Dial(ctx, addr, tlsConf, qconf)
	if err != nil {
		return nil, &DialError{Addr: addr.String(), Err: err}
	}
	c.pool.dialed.Add(1)
	return &quicConn{qc: qc, cc: c.h3.NewClientConn(qc), limit: c.cfg.MaxStreamsPerConn}, nil
}
