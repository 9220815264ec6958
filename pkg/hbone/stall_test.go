package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

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

func isDataOn(id uint32) func(http2.FrameHeader) bool {
	return func(fh http2.FrameHeader) bool { return fh.Type == http2.FrameData && fh.StreamID == id }
}

// A graceful Shutdown ends even when a client has stopped reading with a
// frame half-written to it: the GOAWAY cannot be sent, and the connection
// is closed hard once Shutdown's context ends, or once the GOAWAY has
// waited its bound.
func TestShutdownPeerNotReading(t *testing.T) {
	for _, tt := range []struct {
		name          string
		goAwayTimeout time.Duration
		cancel        bool // else Shutdown's context never ends
		want          error
	}{
		{name: "context ends", goAwayTimeout: time.Hour, cancel: true, want: context.Canceled},
		{name: "GOAWAY not delivered in time", goAwayTimeout: time.Millisecond, want: nil},
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

			raw, err := net.Dial("tcp", e.addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			smallReadBuffer(t, raw)
			tc := tls.Client(raw, rawTLS(e.src))
			if err := tc.HandshakeContext(ctx); err != nil {
				t.Fatal(err)
			}
			p := newRawConn(t, raw, tc)
			p.bw.WriteString(http2.ClientPreface)
			if err := grantAll(p.rawPeer); err != nil {
				t.Fatal(err)
			}
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
			select {
			case <-e.ln.closed:
			case <-ctx.Done():
				t.Fatal("server kept the connection")
			}
			if err := <-wrote; err == nil {
				t.Fatal("the stalled write succeeded on a closed connection")
			}
		})
	}
}
