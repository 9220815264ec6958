package upstream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/skiffmesh/skiff/pkg/hbone"
)

// Protocol is the HTTP version spoken to an endpoint.
type Protocol int

const (
	HTTP1 Protocol = iota
	HTTP2
)

// H1Conn is one HTTP/1.1 client connection (waypoint/internal/http1).
type H1Conn interface {
	// RoundTripContext sends req and returns the response, whose body
	// streams from the connection. The end of ctx (which stands for req's
	// own context) before the body has been read to its end must break
	// the exchange: the round trip or the body's reads fail, and the
	// connection is no longer Reusable.
	RoundTripContext(ctx context.Context, req *http.Request) (*http.Response, error)
	// Reusable reports whether the connection can take another request:
	// the last response was read to its end and nothing failed.
	Reusable() bool
	Close() error
}

// Defaults.
const (
	DefaultIdleTimeout        = 60 * time.Second
	DefaultMaxIdlePerEndpoint = 64
	// DefaultH2StreamWindow is the most of a response the pool takes
	// from an endpoint ahead of the client, per HTTP/2 stream: what a slow
	// client makes the waypoint hold. net/http's 4 MiB is sized for the
	// internet; 1 MiB keeps a 10 Gb/s link with a 0.5 ms round trip busy.
	DefaultH2StreamWindow = 1 << 20
)

// Config configures a Pool.
type Config struct {
	Tunnels Tunneler
	// NewH1 wraps a tunnel in an HTTP/1.1 client connection.
	NewH1 func(net.Conn) H1Conn
	// NoResponse reports whether an HTTP/1.1 round trip failed before any
	// byte of a response arrived.
	NoResponse func(error) bool
	// H2 tunes the HTTP/2 client connections (write timeout, windows);
	// a zero StreamWindow means DefaultH2StreamWindow.
	H2 hbone.H2CClientConfig
	// IdleTimeout closes connections idle this long (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxIdlePerEndpoint bounds idle HTTP/1.1 connections per endpoint
	// (0: DefaultMaxIdlePerEndpoint).
	MaxIdlePerEndpoint int
	Logger             *slog.Logger
}

// Pool holds HTTP connections to endpoints. It is safe for concurrent
// use.
type Pool struct {
	cfg Config

	mu     sync.Mutex
	idle   map[Endpoint][]idleConn // HTTP/1.1, most recent last
	h2     map[Endpoint][]*h2Entry
	h2dial map[Endpoint]*h2Dial
	closed bool
}

// h2Entry is a pooled HTTP/2 connection; idleSweeps counts the sweeps
// in a row that found it without a stream.
type h2Entry struct {
	cc         *hbone.H2CClientConn
	idleSweeps int
}

type idleConn struct {
	c     H1Conn
	since time.Time
}

// h2Dial is an HTTP/2 connection being set up; callers for the same
// endpoint wait for it instead of dialing their own.
type h2Dial struct {
	done chan struct{}
	cc   *hbone.H2CClientConn
	err  error
}

// New returns a Pool.
func New(cfg Config) *Pool {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxIdlePerEndpoint <= 0 {
		cfg.MaxIdlePerEndpoint = DefaultMaxIdlePerEndpoint
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.H2.StreamWindow == 0 {
		cfg.H2.StreamWindow = DefaultH2StreamWindow
	}
	if cfg.H2.Logger == nil {
		cfg.H2.Logger = cfg.Logger
	}
	return &Pool{cfg: cfg, idle: map[Endpoint][]idleConn{}, h2: map[Endpoint][]*h2Entry{}, h2dial: map[Endpoint]*h2Dial{}}
}

// RoundTrip sends req to ep over proto. req.Host and req.URL's path and
// query are sent as they are; hdr goes on the tunnel's CONNECT. A
// req.ContentLength of 0 means no body over either protocol (as for
// http1.ClientConn): req.Body is closed unread. The response body must
// be closed.
func (p *Pool) RoundTrip(ctx context.Context, ep Endpoint, proto Protocol, req *http.Request, hdr http.Header) (*http.Response, error) {
	if proto == HTTP2 {
		return p.roundTripH2(ctx, ep, req, hdr)
	}
	return p.roundTripH1(ctx, ep, req, hdr)
}

// Tunnel opens a raw stream to ep (TCP passthrough, upgraded
// connections).
func (p *Pool) Tunnel(ctx context.Context, ep Endpoint, hdr http.Header) (net.Conn, error) {
	return p.cfg.Tunnels.Tunnel(ctx, ep, hdr)
}

func (p *Pool) roundTripH1(ctx context.Context, ep Endpoint, req *http.Request, hdr http.Header) (*http.Response, error) {
	c, reused := p.getIdle(ep)
	if c == nil {
		nc, err := p.cfg.Tunnels.Tunnel(ctx, ep, hdr)
		if err != nil {
			return nil, err
		}
		c = p.cfg.NewH1(nc)
	}
	// The connection stays with this request until its body is done. An
	// HTTP/1.1 request cannot be abandoned half-way and the connection
	// kept: the end of ctx breaks the exchange (H1Conn's contract), and
	// the connection is then not Reusable.
	resp, err := c.RoundTripContext(ctx, req)
	if err != nil {
		c.Close()
		if reused && p.cfg.NoResponse != nil && p.cfg.NoResponse(err) && idempotent(req) {
			// The endpoint closed an idle connection as the request went
			// out: it did not process it.
			return nil, errors.Join(ErrRefused, err)
		}
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The body is the upgraded connection itself, for the caller to
		// splice: it is no longer this pool's, nor the context's.
		return resp, nil
	}
	resp.Body = &h1Body{ReadCloser: resp.Body, p: p, ep: ep, c: c}
	return resp, nil
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	}
	return false
}

// h1Body returns the connection to the pool once the body has been read
// to its end.
type h1Body struct {
	io.ReadCloser
	p    *Pool
	ep   Endpoint
	c    H1Conn
	once sync.Once
}

func (b *h1Body) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if err == io.EOF {
		b.release()
	}
	return n, err
}

func (b *h1Body) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (b *h1Body) release() {
	b.once.Do(func() {
		if !b.c.Reusable() {
			b.c.Close()
			return
		}
		b.p.putIdle(b.ep, b.c)
	})
}

func (p *Pool) getIdle(ep Endpoint) (H1Conn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[ep]
	now := time.Now()
	for len(list) > 0 {
		last := len(list) - 1
		ic := list[last]
		list[last] = idleConn{} // the array outlives the slot
		list = list[:last]
		if now.Sub(ic.since) < p.cfg.IdleTimeout && ic.c.Reusable() {
			p.setIdleLocked(ep, list)
			return ic.c, true
		}
		go ic.c.Close()
	}
	p.setIdleLocked(ep, list)
	return nil, false
}

// setIdleLocked stores ep's idle list. An emptied list stays, so that
// its array is reused by the next putIdle; Sweep drops those that stay
// empty.
func (p *Pool) setIdleLocked(ep Endpoint, list []idleConn) {
	p.idle[ep] = list
}

func (p *Pool) putIdle(ep Endpoint, c H1Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle[ep]) >= p.cfg.MaxIdlePerEndpoint {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle[ep] = append(p.idle[ep], idleConn{c: c, since: time.Now()})
	p.mu.Unlock()
}

func (p *Pool) roundTripH2(ctx context.Context, ep Endpoint, req *http.Request, hdr http.Header) (*http.Response, error) {
	cc, err := p.h2Conn(ctx, ep, hdr)
	if err != nil {
		return nil, err
	}
	out := req.WithContext(ctx)
	if req.ContentLength == 0 && req.Body != nil && req.Body != http.NoBody {
		// A Body with a zero length would be taken for one of unknown
		// length: the HEADERS would go open, and an empty DATA frame
		// would end the stream, a second write for every GET that came
		// over HTTP/2.
		req.Body.Close()
		out.Body = http.NoBody
	}
	if out.URL.Scheme == "" || out.URL.Host == "" {
		u := *out.URL
		u.Scheme, u.Host = "http", ep.Addr.String()
		out.URL = &u
	}
	resp, err := cc.RoundTrip(out)
	if err != nil && hbone.IsRefused(err) {
		// Not processed by the endpoint: REFUSED_STREAM, or a GOAWAY or
		// connection failure before the stream was sent.
		return nil, errors.Join(ErrRefused, err)
	}
	return resp, err
}

// h2Conn returns a connection to ep with a stream reserved for one
// request, dialing one if none has room.
func (p *Pool) h2Conn(ctx context.Context, ep Endpoint, hdr http.Header) (*hbone.H2CClientConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("upstream: pool closed")
		}
		live := p.h2[ep][:0]
		var found *hbone.H2CClientConn
		for _, e := range p.h2[ep] {
			if e.cc.Err() != nil {
				continue
			}
			live = append(live, e)
			if found == nil && e.cc.Reserve() == nil {
				found = e.cc
				e.idleSweeps = 0
			}
		}
		clear(p.h2[ep][len(live):])
		if len(live) == 0 {
			delete(p.h2, ep)
		} else {
			p.h2[ep] = live
		}
		if found != nil {
			p.mu.Unlock()
			return found, nil
		}
		d := p.h2dial[ep]
		if d == nil {
			d = &h2Dial{done: make(chan struct{})}
			p.h2dial[ep] = d
			go p.dialH2(ep, hdr, d)
		}
		p.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, &ConnectError{Endpoint: ep, Err: ctx.Err()}
		}
		if d.err != nil {
			return nil, d.err
		}
	}
}

// dialH2 sets up an HTTP/2 connection for every caller waiting on d. It
// runs detached from any one request, bounded by the tunnel's own
// handshake timeout.
func (p *Pool) dialH2(ep Endpoint, hdr http.Header, d *h2Dial) {
	defer close(d.done)
	var cc *hbone.H2CClientConn
	nc, err := p.cfg.Tunnels.Tunnel(context.Background(), ep, hdr)
	if err == nil {
		cc, err = hbone.NewH2CClientConn(nc, p.cfg.H2)
	}
	if err != nil {
		var ce *ConnectError
		if !errors.As(err, &ce) {
			err = &ConnectError{Endpoint: ep, Err: err}
		}
	}
	d.cc, d.err = cc, err
	p.mu.Lock()
	delete(p.h2dial, ep)
	if err == nil && !p.closed {
		p.h2[ep] = append(p.h2[ep], &h2Entry{cc: cc})
	} else if err == nil {
		cc.Close()
		d.err = errors.New("upstream: pool closed")
	}
	p.mu.Unlock()
}

// Sweep closes idle HTTP/1.1 connections past the idle timeout and idle
// HTTP/2 connections; run it periodically.
func (p *Pool) Sweep() {
	now := time.Now()
	p.mu.Lock()
	var stale []H1Conn
	for ep, list := range p.idle {
		if len(list) == 0 {
			delete(p.idle, ep) // nothing idle: let the array go
			continue
		}
		keep := list[:0]
		for _, ic := range list {
			if now.Sub(ic.since) >= p.cfg.IdleTimeout {
				stale = append(stale, ic.c)
				continue
			}
			keep = append(keep, ic)
		}
		clear(list[len(keep):]) // drop the references to closed connections
		p.idle[ep] = keep
	}
	var idleH2 []*hbone.H2CClientConn
	for ep, list := range p.h2 {
		keep := list[:0]
		for _, e := range list {
			// Idle at two sweeps in a row: for IdleTimeout/2 at least.
			if e.cc.Idle() {
				e.idleSweeps++
			} else {
				e.idleSweeps = 0
			}
			if e.cc.Err() != nil || e.idleSweeps >= 2 {
				idleH2 = append(idleH2, e.cc)
				continue
			}
			keep = append(keep, e)
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.h2, ep)
		} else {
			p.h2[ep] = keep
		}
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.Close()
	}
	for _, cc := range idleH2 {
		cc.Close()
	}
}

// Run sweeps idle connections until ctx is done, then closes the pool.
func (p *Pool) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.Close()
			return nil
		case <-t.C:
			p.Sweep()
		}
	}
}

// Close closes every pooled connection; requests in flight fail.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle, h2 := p.idle, p.h2
	p.idle, p.h2 = map[Endpoint][]idleConn{}, map[Endpoint][]*h2Entry{}
	p.mu.Unlock()
	for _, list := range idle {
		for _, ic := range list {
			ic.c.Close()
		}
	}
	for _, list := range h2 {
		for _, e := range list {
			e.cc.Close()
		}
	}
}
