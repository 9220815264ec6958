package hbone

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests here play peers that abuse the HTTP/2 engine: they make it
// answer (PING, SETTINGS, refused streams) without reading the answers,
// or open and reset streams faster than handlers finish.

// abuseLog is the start of the record logged when a peer is dropped for
// abuse.
const abuseLog = "hbone: closing connection of abusive peer"

// logWatch is a slog.Handler that reports the first record whose message
// starts with prefix.
type logWatch struct {
	prefix string
	once   sync.Once
	seen   chan struct{}
}

func newLogWatch(prefix string) *logWatch {
	return &logWatch{prefix: prefix, seen: make(chan struct{})}
}

func (l *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (l *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logWatch) WithGroup(string) slog.Handler            { return l }

func (l *logWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, l.prefix) {
		l.once.Do(func() { close(l.seen) })
	}
	return nil
}

func (l *logWatch) fired() bool {
	select {
	case <-l.seen:
		return true
	default:
		return false
	}
}

// rawPeer is a hand-driven HTTP/2 endpoint over TLS: it writes what it
// likes, and reads only when told. Writes are buffered until flush.
type rawPeer struct {
	raw    net.Conn // the TCP socket
	bw     *bufio.Writer
	fr     *http2.Framer
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
	nextID uint32
}

func newRawPeer(t *testing.T, raw net.Conn, tc *tls.Conn) *rawPeer {
	t.Helper()
	p := &rawPeer{raw: raw, bw: bufio.NewWriterSize(tc, 64<<10), nextID: 1}
	p.fr = http2.NewFramer(p.bw, tc)
	p.enc = hpack.NewEncoder(&p.hbuf)
	return p
}

// dialRawPeer connects to e's server as an authenticated client, and
// sends the preface and SETTINGS.
func dialRawPeer(t *testing.T, e *tcpEnv) *rawPeer {
	t.Helper()
	raw, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	tc := tls.Client(raw, rawTLS(e.src))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	p := newRawPeer(t, raw, tc)
	p.bw.WriteString(http2.ClientPreface)
	if err := p.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := p.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

// open sends a CONNECT, with the extra header fields, on the next stream.
func (p *rawPeer) open(extra ...hpack.HeaderField) (uint32, error) {
	id := p.nextID
	p.nextID += 2
	p.hbuf.Reset()
	p.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	p.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: testAuthority.String()})
	for _, f := range extra {
		p.enc.WriteField(f)
	}
	return id, p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndHeaders: true})
}

// readUntil reads frames until one satisfies stop, and returns it.
func (p *rawPeer) readUntil(stop func(http2.Frame) bool) (http2.Frame, error) {
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if stop(f) {
			return f, nil
		}
	}
}

func isGoAway(f http2.Frame) bool {
	_, ok := f.(*http2.GoAwayFrame)
	return ok
}

// flood runs send, in batches of frames, on a goroutine of its own until
// it fails; the returned function waits for that, after p.raw is closed.
func (p *rawPeer) flood(send func(p *rawPeer) error) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for range 256 {
				if send(p) != nil {
					return
				}
			}
			if p.bw.Flush() != nil {
				return
			}
		}
	}()
	return func() { <-done }
}

// awaitGoAway waits for the engine to give up on its flooding peer p,
// then reads what it sent until the GOAWAY, and hangs up.
func awaitGoAway(t *testing.T, ctx context.Context, logs *logWatch, p *rawPeer, flooding func()) {
	t.Helper()
	defer flooding()
	defer p.raw.Close()
	select {
	case <-logs.seen:
	case <-ctx.Done():
		t.Fatal("the connection was still served after a flood of frames to answer, never read")
	}
	f, err := p.readUntil(isGoAway)
	if err != nil {
		t.Fatalf("connection ended without GOAWAY: %v", err)
	}
	if code := f.(*http2.GoAwayFrame).ErrCode; code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
}

// floods are what a peer may send to make the engine answer.
var floods = []struct {
	name       string
	serverOnly bool
	setup      func(p *rawPeer) error
	send       func(p *rawPeer) error
}{
	{name: "PING", send: func(p *rawPeer) error { return p.fr.WritePing(false, [8]byte{1}) }},
	{name: "SETTINGS", send: func(p *rawPeer) error { return p.fr.WriteSettings() }},
	{
		// Each is refused with RST_STREAM: the one allowed stream is open.
		name: "HEADERS beyond the stream limit", serverOnly: true,
		setup: func(p *rawPeer) error {
			if _, err := p.open(); err != nil {
				return err
			}
			return p.bw.Flush()
		},
		send: func(p *rawPeer) error { _, err := p.open(); return err },
	},
}

// waitForEnd holds the tunnel until the connection goes.
var waitForEnd = HandlerFunc(func(ctx context.Context, w *Responder, r *Request) { <-ctx.Done() })

// A client that makes the server queue answers faster than it reads them
// is told ENHANCE_YOUR_CALM and dropped, instead of the queue growing
// without bound.
func TestControlFrameFloodServer(t *testing.T) {
	for _, tt := range floods {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			logs := newLogWatch(abuseLog)
			e := newTCPEnv(t, waitForEnd, envOpt{
				// Long enough for the test to read the GOAWAY at its pace.
				goAwayTimeout: time.Minute,
				serverCfg: func(c *ServerConfig) {
					c.MaxConcurrentStreams = 1
					c.Logger = slog.New(logs)
				},
			})
			p := dialRawPeer(t, e)
			if tt.setup != nil {
				if err := tt.setup(p); err != nil {
					t.Fatal(err)
				}
			}
			awaitGoAway(t, ctx, logs, p, p.flood(tt.send))
			e.awaitConnClosed(t, ctx)
		})
	}
}

// A server that floods the client likewise is dropped by the client.
func TestControlFrameFloodClient(t *testing.T) {
	for _, tt := range floods {
		if tt.serverOnly {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			logs := newLogWatch(abuseLog)
			s := newStallServer(t, func(cfg *ClientConfig) { cfg.Logger = slog.New(logs) })
			s.client.goAwayTimeout = time.Minute
			dialed := s.dial(ctx, nil)

			raw, err := s.ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			s.ln.Close() // a retry finds nobody
			defer raw.Close()
			tc := tls.Server(raw, s.tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(tc, make([]byte, len(http2.ClientPreface))); err != nil {
				t.Fatal(err)
			}
			p := newRawPeer(t, raw, tc)
			if err := p.fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			awaitGoAway(t, ctx, logs, p, p.flood(tt.send))
			if r := awaitDial(t, ctx, dialed); r.err == nil {
				r.c.Close()
				t.Fatal("Dial through a flooding server succeeded")
			}
		})
	}
}

// The queue of frames the engine sends on its own behalf stays bounded,
// and its overflow wakes the read loop to end the connection.
func TestControlQueueBounded(t *testing.T) {
	for _, tt := range []struct {
		queued  int
		flooded bool
	}{
		{queued: 1},
		{queued: maxQueuedControlFrames},
		{queued: maxQueuedControlFrames + 1, flooded: true},
		{queued: 3 * maxQueuedControlFrames, flooded: true},
	} {
		a, b := net.Pipe()
		c := newH2Conn(a, false, h2Config{})
		for range tt.queued {
			c.queue(func() error { return nil })
		}
		c.ctrlMu.Lock()
		n := len(c.ctrl)
		c.ctrlMu.Unlock()
		if n > maxQueuedControlFrames {
			t.Errorf("%d queued: queue holds %d frames, limit %d", tt.queued, n, maxQueuedControlFrames)
		}
		if c.flooded.Load() != tt.flooded {
			t.Errorf("%d queued: flooded = %v, want %v", tt.queued, !tt.flooded, tt.flooded)
		}
		if tt.flooded {
			// The read loop's next read fails at once.
			if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%d queued: read after overflow: %v, want deadline exceeded", tt.queued, err)
			}
		}
		a.Close()
		b.Close()
	}
}

// Streams reset while their handlers run still hold a handler slot: no
// more than MaxConcurrentStreams handlers ever run on a connection, and a
// peer that resets streams faster than their handlers finish is told
// ENHANCE_YOUR_CALM (CVE-2023-44487).
func TestRapidResetBoundsHandlers(t *testing.T) {
	const limit = 4
	for _, tt := range []struct {
		name string
		// hold: handlers ignore the reset and run until released.
		hold bool
		// resets is how many streams the peer opens and resets at once.
		resets int
	}{
		{name: "handlers outlive the reset", hold: true, resets: 100},
		{name: "handlers end on reset", resets: 2000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			var running, maxRunning, started atomic.Int64
			entered := make(chan struct{}, tt.resets)
			release := make(chan struct{})
			var releaseOnce sync.Once
			unblock := func() { releaseOnce.Do(func() { close(release) }) }
			defer unblock()
			h := HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
				started.Add(1)
				n := running.Add(1)
				defer running.Add(-1)
				for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
				}
				entered <- struct{}{}
				if tt.hold {
					<-release
				} else {
					<-ctx.Done()
				}
			})
			e := newTCPEnv(t, h, envOpt{
				goAwayTimeout: time.Minute,
				serverCfg:     func(c *ServerConfig) { c.MaxConcurrentStreams = limit },
			})
			p := dialRawPeer(t, e)
			// The last frame's answer, a PING ack or a GOAWAY.
			last := make(chan http2.Frame, 1)
			go func() {
				f, _ := p.readUntil(func(f http2.Frame) bool {
					ping, ok := f.(*http2.PingFrame)
					return isGoAway(f) || ok && ping.IsAck()
				})
				last <- f
			}()
			for range tt.resets {
				id, err := p.open()
				if err == nil {
					err = p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := p.fr.WritePing(false, [8]byte{}); err != nil {
				t.Fatal(err)
			}
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			var f http2.Frame
			select {
			case f = <-last:
			case <-ctx.Done():
				t.Fatal("no answer to the PING")
			}
			ga, _ := f.(*http2.GoAwayFrame)
			if tt.hold {
				// 4 running, 16 waiting: the next is one too many.
				if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
					t.Fatalf("got %v after %d streams reset while their handlers ran, want GOAWAY ENHANCE_YOUR_CALM", f, tt.resets)
				}
				for range limit {
					select {
					case <-entered:
					case <-ctx.Done():
						t.Fatal("handlers did not start")
					}
				}
			} else if ga != nil && ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("got GOAWAY %v", ga.ErrCode)
			}
			unblock()
			p.raw.Close()
			e.awaitConnClosed(t, ctx)
			if m := maxRunning.Load(); m > limit {
				t.Errorf("%d handlers ran at once, limit %d", m, limit)
			}
			if tt.hold && started.Load() != limit {
				// The waiting streams were all reset: none gets a handler.
				t.Errorf("%d handlers started, want %d", started.Load(), limit)
			}
		})
	}
}

// A client that keeps within the limits is never taken for an abuser:
// many concurrent tunnels beyond the server's stream limit, and tunnels
// closed before their handlers finish.
func TestStreamGuardsSpareNormalClients(t *testing.T) {
	ctx := testCtx(t)
	logs := newLogWatch(abuseLog)
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) {
		c.MaxConcurrentStreams = 8
		c.Logger = slog.New(logs)
	}})
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 200 {
		wg.Go(func() { errs <- echoOnce(ctx, e, i) })
	}
	// Closing a tunnel the server still serves resets it: its handler
	// ends after the client has reused the slot.
	for range 4 {
		wg.Go(func() {
			for range 100 {
				c, err := e.dial(ctx)
				if err != nil {
					errs <- err
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := echoOnce(ctx, e, 0); err != nil {
		t.Fatal(err)
	}
	if logs.fired() {
		t.Fatal("a well-behaved client was dropped as abusive")
	}
}

// frameSeed is a fuzz seed: a SETTINGS frame of settings, then the
// frames write writes.
func frameSeed(settings []http2.Setting, write func(p *rawPeer)) []byte {
	var buf bytes.Buffer
	p := &rawPeer{bw: bufio.NewWriter(&buf), nextID: 1}
	p.fr = http2.NewFramer(p.bw, nil)
	p.fr.AllowIllegalWrites = true
	p.enc = hpack.NewEncoder(&p.hbuf)
	p.fr.WriteSettings(settings...)
	write(p)
	p.bw.Flush()
	return buf.Bytes()
}

// FuzzServerFrames feeds arbitrary frames to a server connection: it must
// end the connection cleanly, never crash or hang.
func FuzzServerFrames(f *testing.F) {
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) { p.fr.WritePing(false, [8]byte{1}) }))
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		for range 8 {
			id, _ := p.open()
			p.fr.WriteData(id, false, []byte("hello"))
			p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	}))
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		id, _ := p.open()
		p.fr.WriteWindowUpdate(id, 0)
		p.fr.WriteWindowUpdate(0, 1<<31-1)
		p.fr.WriteData(id, true, nil)
		p.fr.WriteGoAway(id, http2.ErrCodeNo, nil)
	}))
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		id, _ := p.open()
		p.fr.WriteContinuation(id, true, []byte{0x82})
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, peer := net.Pipe()
		c := newH2Conn(srv, false, h2Config{maxStreams: 4, streamWindow: 1 << 16, connWindow: 1 << 17,
			logger: slog.New(slog.DiscardHandler)})
		c.onStream = func(st *h2Stream, _ *http2.MetaHeadersFrame) {
			st.respond(200, false)
			st.Close()
		}
		go io.Copy(io.Discard, peer)
		go func() {
			peer.Write(in)
			peer.Close()
		}()
		if err := c.start(); err != nil {
			return
		}
		select {
		case <-c.done:
		case <-time.After(time.Minute):
			t.Fatal("connection did not end after its input")
		}
	})
}
