package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests here play a peer that grants all the flow-control credit
// asked for but stops reading TCP, or reads only a little at a time. The
// engine's socket send buffer is fixed small (sendBuffer), so that the
// pace of its writes is the peer's.

const sendBuffer = 64 << 10

// wbtConn is one engine connection, server or client side, with two
// tunnels open on it, and the peer at the other end played by hand.
type wbtConn struct {
	a, b net.Conn // the engine's tunnels on streams 1 and 3
	p    *rawConn
	// third, server side only, lets the handler of stream 5, which is
	// open, answer it, and returns Accept's error.
	third func() error
}

// errAnswered stops readUntilHeader once a CONNECT is answered.
var errAnswered = errors.New("answered")

// answerOne is an onHeaders that answers the next CONNECT, then stops.
func (c *rawConn) answerOne(id uint32, fields []hpack.HeaderField) error {
	if err := c.answerConnects(id, fields); err != nil {
		return err
	}
	return errAnswered
}

func never(http2.FrameHeader) bool { return false }

// serverSide serves a connection from a Server with the given write byte
// timeout to a hand-played client, which opens streams 1, 3 and 5.
func serverSide(t *testing.T, ctx context.Context, timeout time.Duration) *wbtConn {
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 3)
	gate := make(chan struct{})
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		if r.Header.Get("x-gate") != "" {
			<-gate
		}
		c, err := w.Accept()
		if err == nil {
			w.Detach()
		}
		acc <- accepted{c, err}
	}), envOpt{serverCfg: func(c *ServerConfig) { c.WriteByteTimeout = timeout }})
	// A listener of its own hands the server bare TCP conns, which take
	// the raw system call path (sockConn), as in production.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(sendBufferListener{ln})

	p := dialStalling(t, ctx, ln.Addr().String(), e.src)
	w := &wbtConn{p: p}
	for i, dst := range []*net.Conn{&w.a, &w.b, nil} {
		if dst == nil {
			// Stream 5's handler waits at the gate.
			_, err = p.open(hpack.HeaderField{Name: "x-gate", Value: "1"})
		} else {
			_, err = p.open()
		}
		if err == nil {
			err = p.bw.Flush()
		}
		if err != nil {
			t.Fatal(err)
		}
		if dst == nil {
			break
		}
		select {
		case r := <-acc:
			if r.err != nil {
				t.Fatalf("Accept of stream %d: %v", 2*i+1, r.err)
			}
			*dst = r.c
			t.Cleanup(func() { r.c.Close() })
		case <-ctx.Done():
			t.Fatal("the server never accepted")
		}
	}
	w.third = func() error {
		close(gate)
		select {
		case r := <-acc:
			if r.c != nil {
				r.c.Close()
			}
			return r.err
		case <-ctx.Done():
			t.Fatal("stream 5's handler never answered")
			return nil
		}
	}
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	return w
}

// clientSide dials two tunnels with a Client with the given write byte
// timeout to a hand-played server.
func clientSide(t *testing.T, ctx context.Context, timeout time.Duration) *wbtConn {
	s := newStallServer(t, func(cfg *ClientConfig) {
		cfg.WriteByteTimeout = timeout
		cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return c, c.(*net.TCPConn).SetWriteBuffer(sendBuffer)
		}
	})
	w := &wbtConn{}
	for _, dst := range []*net.Conn{&w.a, &w.b} {
		res := s.dial(ctx, nil)
		if w.p == nil {
			w.p = s.accept(ctx)
		}
		if _, err := w.p.readUntilHeader(never, w.p.answerOne); !errors.Is(err, errAnswered) {
			t.Fatal(err)
		}
		r := awaitDial(t, ctx, res)
		if r.err != nil {
			t.Fatal(r.err)
		}
		*dst = r.c
		t.Cleanup(func() { r.c.Close() })
	}
	return w
}

// wbtSides are the two ends a wbtConn's engine can play.
var wbtSides = []struct {
	name  string
	setup func(*testing.T, context.Context, time.Duration) *wbtConn
}{
	{"server", serverSide},
	{"client", clientSide},
}

// sendBufferListener fixes its conns' send buffers small.
type sendBufferListener struct{ net.Listener }

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return c, c.(*net.TCPConn).SetWriteBuffer(sendBuffer)
}

// A peer that stops reading while a write to it is under way has its
// connection closed once the write has made no progress for
// WriteByteTimeout. The stalled write fails, and so do those waiting
// behind it: another tunnel's Close (which must send END_STREAM), and,
// server side, a response HEADERS.
func TestWriteByteTimeoutPeerStopsReading(t *testing.T) {
	for _, tt := range wbtSides {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			w := tt.setup(t, ctx, 300*time.Millisecond)
			p := w.p

			// Tunnel b's peer has finished sending: closing b sends
			// END_STREAM, a write.
			if err := p.fr.WriteData(3, true, nil); err != nil {
				t.Fatal(err)
			}
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(w.b); err != nil {
				t.Fatal(err)
			}

			wrote := make(chan error, 1)
			go func() {
				_, err := w.a.Write(make([]byte, bigFrame))
				wrote <- err
			}()
			// Stop reading once the big frame has begun.
			if _, err := p.readUntilHeader(isDataOn(1), nil); err != nil {
				t.Fatal(err)
			}
			closed := make(chan error, 1)
			go func() { closed <- w.b.Close() }()
			var third chan error
			if w.third != nil {
				third = make(chan error, 1)
				go func() { third <- w.third() }()
			}

			for name, ch := range map[string]chan error{"tunnel a's Write": wrote, "tunnel b's Close": closed, "stream 5's Accept": third} {
				if ch == nil {
					continue
				}
				select {
				case err := <-ch:
					if !errors.Is(err, ErrWriteByteTimeout) {
						t.Errorf("%s = %v, want ErrWriteByteTimeout", name, err)
					}
				case <-ctx.Done():
					t.Fatalf("%s hangs on a peer that does not read", name)
				}
			}
			// Tunnels fail with the cause, and the connection is closed:
			// what the peer did not read ends.
			if _, err := w.a.Write([]byte("x")); !errors.Is(err, ErrWriteByteTimeout) {
				t.Errorf("Write after the timeout = %v, want ErrWriteByteTimeout", err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, p.r)
				done <- err
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("the connection stayed open")
			}
		})
	}
}

// slowReader reads at most chunk bytes at a time, pausing before each
// read.
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
}

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), s.chunk)])
}

// A peer that reads slowly but steadily keeps its connection, although
// single socket writes to it last several WriteByteTimeouts: the deadline
// moves on as they make progress.
func TestWriteByteTimeoutSlowPeer(t *testing.T) {
	const (
		// Generous, so a loaded machine's scheduling pauses are not taken
		// for a stalled peer.
		timeout = 500 * time.Millisecond
		// 4 KB every 10ms: a 256 KB batch of TLS records takes some
		// 640ms to leave, and the whole about 2.6s.
		size = 1 << 20
	)
	for _, tt := range wbtSides {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			w := tt.setup(t, ctx, timeout)
			p := w.p

			wrote := make(chan error, 1)
			go func() {
				_, err := w.a.Write(make([]byte, size))
				if err == nil {
					err = w.a.(closeWriter).CloseWrite()
				}
				wrote <- err
			}()
			fast := p.r
			p.r = slowReader{r: fast, chunk: 4 << 10, pause: 10 * time.Millisecond}
			got := 0
			if _, err := p.readUntilHeader(func(fh http2.FrameHeader) bool {
				if fh.Type != http2.FrameData || fh.StreamID != 1 {
					return false
				}
				got += int(fh.Length)
				return fh.Flags.Has(http2.FlagDataEndStream)
			}, nil); err != nil {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			p.r = fast
			if err := <-wrote; err != nil {
				t.Fatalf("Write to a slow peer: %v", err)
			}
			if got != size {
				t.Fatalf("peer got %d bytes, want %d", got, size)
			}
			// The connection lives on.
			if _, err := w.b.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if _, err := p.readUntilHeader(isDataOn(3), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}
