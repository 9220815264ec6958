package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests here play peers that stop reading while the engine writes:
// its socket fills and a frame write blocks half-way. Whatever waits on
// such a write (Shutdown, Dial) must still end with its context.

// bigFrame is the largest DATA frame a peer may allow (2^24-1 bytes): far
// more than the socket buffers of both ends hold once the reader's
// receive buffer is fixed small, so a write of one cannot finish while
// the peer does not read.
const bigFrame = 1<<24 - 1

// grantAll lets the engine send frames of bigFrame bytes at once: the
// largest frame size and windows.
func grantAll(p *rawPeer) error {
	if err := p.fr.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: bigFrame},
	); err != nil {
		return err
	}
	return p.fr.WriteWindowUpdate(0, 1<<31-1-initialWindowSize)
}

// smallReadBuffer fixes the socket's receive buffer small, so that what
// the peer does not read soon blocks the writer.
func smallReadBuffer(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
}

// rawConn reads the engine's frames one header at a time, so that it can
// stop reading in the middle of a frame. Header blocks are decoded in
// order, keeping the HPACK state in step with the engine's.
type rawConn struct {
	*rawPeer
	r   io.Reader // the TLS conn
	dec *hpack.Decoder
}

func newRawConn(t *testing.T, raw net.Conn, tc *tls.Conn) *rawConn {
	return &rawConn{rawPeer: newRawPeer(t, raw, tc), r: tc, dec: hpack.NewDecoder(4096, nil)}
}

// readUntilHeader reads whole frames until the header of one that
// satisfies stop, and returns that header with its payload unread.
// onHeaders gets each complete header block read meanwhile.
func (c *rawConn) readUntilHeader(stop func(http2.FrameHeader) bool, onHeaders func(id uint32, fields []hpack.HeaderField) error) (http2.FrameHeader, error) {
	var block []byte
	for {
		fh, err := http2.ReadFrameHeader(c.r)
		if err != nil {
			return fh, err
		}
		if stop(fh) {
			return fh, nil
		}
		payload := make([]byte, fh.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return fh, err
		}
		switch fh.Type {
		case http2.FrameHeaders, http2.FrameContinuation:
			if fh.Type == http2.FrameHeaders && fh.Flags.Has(http2.FlagHeadersPadded|http2.FlagHeadersPriority) {
				return fh, errors.New("unexpected HEADERS flags")
			}
			block = append(block, payload...)
			if !fh.Flags.Has(http2.FlagHeadersEndHeaders) {
				continue
			}
			fields, err := c.dec.DecodeFull(block)
			block = nil
			if err != nil {
				return fh, err
			}
			if onHeaders != nil {
				if err := onHeaders(fh.StreamID, fields); err != nil {
					return fh, err
				}
			}
		}
	}
}

// answer sends a 200 response on stream id.
func (c *rawConn) answer(id uint32) error {
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	return c.bw.Flush()
}

// answerConnects answers each CONNECT with 200, and checks that it is one.
func (c *rawConn) answerConnects(id uint32, fields []hpack.HeaderField) error {
	var method, authority string
	for _, f := range fields {
		switch f.Name {
		case ":method":
			method = f.Value
		case ":authority":
			authority = f.Value
		}
	}
	if method != http.MethodConnect || authority != testAuthority.String() {
		return errors.New("not the CONNECT sent: " + method + " " + authority)
	}
	return c.answer(id)
}

// dialStalling connects to an HBONE server at addr as an authenticated
// client with a small receive buffer, and sends (unflushed) the preface
// and grantAll.
func dialStalling(t *testing.T, ctx context.Context, addr string, src *tls.Certificate) *rawConn {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	smallReadBuffer(t, raw)
	tc := tls.Client(raw, rawTLS(src))
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	p := newRawConn(t, raw, tc)
	p.bw.WriteString(http2.ClientPreface)
	if err := grantAll(p.rawPeer); err != nil {
		t.Fatal(err)
	}
	return p
}

func isDataOn(id uint32) func(http2.FrameHeader) bool {
	return func(fh http2.FrameHeader) bool { return fh.Type == http2.FrameData && fh.StreamID == id }
}

func isHeadersOn(id uint32) func(http2.FrameHeader) bool {
	return func(fh http2.FrameHeader) bool { return fh.Type == http2.FrameHeaders && fh.StreamID == id }
}

// A graceful Shutdown ends even when a client has stopped reading with a
// frame half-written to it: the GOAWAY cannot be sent, and the connection
// is closed hard once Shutdown's context ends, or once the GOAWAY has
// waited its bound: Shutdown's deadline, or goAwayTimeout if it has none.
func TestShutdownPeerNotReading(t *testing.T) {
	for _, tt := range []struct {
		name          string
		goAwayTimeout time.Duration
		cancel        bool // else Shutdown's context does not end
		want          error
	}{
		{name: "context ends", goAwayTimeout: time.Hour, cancel: true, want: context.Canceled},
		{name: "GOAWAY not written in time", goAwayTimeout: time.Millisecond, want: nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			wrote := make(chan error, 1)
			e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
				c, err := w.Accept()
				if err != nil {
					wrote <- err
					return
				}
				_, err = c.Write(make([]byte, bigFrame))
				wrote <- err
			}), envOpt{goAwayTimeout: tt.goAwayTimeout})

			p := dialStalling(t, ctx, e.addr.String(), e.src)
			if _, err := p.open(); err != nil {
				t.Fatal(err)
			}
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			// Once the big frame has begun, stop reading: its write
			// holds the connection's writer until the peer reads.
			if _, err := p.readUntilHeader(isDataOn(1), nil); err != nil {
				t.Fatal(err)
			}

			sctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- e.srv.Shutdown(sctx) }()
			if err := <-e.serveErr; !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve = %v", err)
			}
			if tt.cancel {
				cancel()
			}
			select {
			case err := <-shut:
				if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
					t.Fatalf("Shutdown = %v, want %v", err, tt.want)
				}
			case <-ctx.Done():
				t.Fatal("Shutdown hangs on a client that does not read")
			}
			e.awaitConnClosed(t, ctx)
			if err := <-wrote; err == nil {
				t.Fatal("the stalled write succeeded on a closed connection")
			}
		})
	}
}

// stallServer is an HBONE server played by hand over one connection.
type stallServer struct {
	t      *testing.T
	ln     net.Listener
	client *Client
	src    *tls.Certificate
	srvID  spiffeid.ID
	tlsCfg *tls.Config
}

// newStallServer listens for one, with a Client to dial it configured by
// clientCfg (if not nil).
func newStallServer(t *testing.T, clientCfg func(*ClientConfig)) *stallServer {
	pki := newPKI(t, "cluster.local")
	srvCert, srvID := pki.cert(t, "ns1", "server", time.Hour)
	src, _ := pki.cert(t, "ns2", "client", time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := ClientConfig{Bundles: pki.bundles}
	if clientCfg != nil {
		clientCfg(&cfg)
	}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &stallServer{t: t, ln: ln, client: client, src: src, srvID: srvID, tlsCfg: &tls.Config{
		Certificates: []tls.Certificate{*srvCert},
		NextProtos:   []string{"h2"},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
	}}
}

// dial runs the client's Dial on a goroutine of its own.
func (s *stallServer) dial(ctx context.Context, hdr http.Header) <-chan dialResult {
	res := make(chan dialResult, 1)
	go func() {
		dst := s.ln.Addr().(*net.TCPAddr).AddrPort()
		c, err := s.client.Dial(ctx, s.src, dst, testAuthority, []spiffeid.ID{s.srvID}, hdr)
		res <- dialResult{c, err}
	}()
	return res
}

type dialResult struct {
	c   net.Conn
	err error
}

// accept takes the client's connection and opens HTTP/2 on it, with
// everything granted (grantAll).
func (s *stallServer) accept(ctx context.Context) *rawConn {
	t := s.t
	t.Helper()
	raw, err := s.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	smallReadBuffer(t, raw)
	tc := tls.Server(raw, s.tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tc, make([]byte, len(http2.ClientPreface))); err != nil {
		t.Fatal(err)
	}
	p := newRawConn(t, raw, tc)
	if err := grantAll(p.rawPeer); err != nil {
		t.Fatal(err)
	}
	if err := p.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

func awaitDial(t *testing.T, ctx context.Context, res <-chan dialResult) dialResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-ctx.Done():
		t.Fatal("Dial hangs")
		return dialResult{}
	}
}

// Dial gives up when its context ends while its CONNECT cannot be
// written to a server that has stopped reading: either it waits behind
// another tunnel's half-written frame, or its own HEADERS are
// half-written. In the first case nothing of the CONNECT was sent and the
// connection goes on serving; in the second its framing is broken and it
// is torn down.
func TestDialCancelStalledWrite(t *testing.T) {
	for _, tt := range []struct {
		name string
		// bigHeader: the CONNECT itself is too big for the socket
		// buffers; else tunnel 1's DATA frame is.
		bigHeader bool
	}{
		{name: "behind another tunnel's write"},
		{name: "CONNECT half-written", bigHeader: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := newStallServer(t, nil)
			first := s.dial(ctx, nil)
			p := s.accept(ctx)
			stopAt := isDataOn(1)
			if tt.bigHeader {
				stopAt = isHeadersOn(3)
			}
			stalled := make(chan http2.FrameHeader, 1)
			go func() {
				fh, err := p.readUntilHeader(stopAt, p.answerConnects)
				if err != nil {
					t.Error(err)
					p.raw.Close()
				}
				stalled <- fh
			}()
			r := awaitDial(t, ctx, first)
			if r.err != nil {
				t.Fatal(r.err)
			}
			tun := r.c
			defer tun.Close()

			dctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var second <-chan dialResult
			wrote := make(chan error, 1)
			if tt.bigHeader {
				second = s.dial(dctx, http.Header{"X-Pad": {strings.Repeat("a", bigFrame)}})
			} else {
				go func() {
					_, err := tun.Write(make([]byte, bigFrame))
					wrote <- err
				}()
			}
			// The server stops reading once the big frame has begun.
			var fh http2.FrameHeader
			select {
			case fh = <-stalled:
			case <-ctx.Done():
				t.Fatal("the big frame never came")
			}
			if !tt.bigHeader {
				second = s.dial(dctx, nil)
			}
			cancel()
			r = awaitDial(t, ctx, second)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Dial = %v, %v; want context.Canceled", r.c, r.err)
			}
			if r.err == context.Canceled {
				t.Errorf("Dial's error says nothing of what it was doing: %v", r.err)
			}

			if tt.bigHeader {
				// Torn down: tunnel 1 fails, the HEADERS never
				// complete, and the next Dial connects afresh.
				if _, err := io.ReadAll(tun); err == nil {
					t.Fatal("tunnel 1 survived a half-written HEADERS")
				}
				if _, err := io.CopyN(io.Discard, p.r, int64(fh.Length)); err == nil {
					t.Fatal("the abandoned HEADERS were written whole")
				}
				third := s.dial(ctx, nil)
				p = s.accept(ctx)
				go p.readUntilHeader(func(http2.FrameHeader) bool { return false }, p.answerConnects)
				if r := awaitDial(t, ctx, third); r.err != nil {
					t.Fatal(r.err)
				} else {
					r.c.Close()
				}
				if n := s.client.Stats().Dialed; n != 2 {
					t.Fatalf("%d connections dialed, want 2", n)
				}
				return
			}
			// Intact: once the server reads again, tunnel 1's frame
			// completes and the next CONNECT takes stream 3 on the same
			// connection, its header block decoding in step.
			if _, err := io.CopyN(io.Discard, p.r, int64(fh.Length)); err != nil {
				t.Fatal(err)
			}
			if err := <-wrote; err != nil {
				t.Fatalf("tunnel 1's write: %v", err)
			}
			third := s.dial(ctx, nil)
			got := make(chan uint32, 1)
			go p.readUntilHeader(func(http2.FrameHeader) bool { return false }, func(id uint32, f []hpack.HeaderField) error {
				if err := p.answerConnects(id, f); err != nil {
					t.Error(err)
					return err
				}
				got <- id
				return nil
			})
			if r := awaitDial(t, ctx, third); r.err != nil {
				t.Fatal(r.err)
			} else {
				r.c.Close()
			}
			if id := <-got; id != 3 {
				t.Errorf("next CONNECT on stream %d, want 3", id)
			}
			if n := s.client.Stats().Dialed; n != 1 {
				t.Fatalf("%d connections dialed, want 1", n)
			}
		})
	}
}
