package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests here drive the HTTP/2 engine with raw frames, as h2spec does
// (h2spec_test.go), and check what a peer sees: the stream and
// connection errors of RFC 9113, and the answers the server gives
// requests that are not tunnels.

// framePeer is a rawPeer that decodes header blocks and reads with a
// deadline, so that a missing answer fails the test instead of hanging.
type framePeer struct {
	*rawPeer
	t *testing.T
}

func dialFramePeer(t *testing.T, ctx context.Context, e *tcpEnv) *framePeer {
	t.Helper()
	p := &framePeer{rawPeer: dialRawPeer(t, e), t: t}
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if d, ok := ctx.Deadline(); ok {
		p.raw.SetReadDeadline(d)
	}
	return p
}

// headers sends a header block on stream id, in one frame: the server
// takes frames of up to defaultMaxFrameSize.
func (p *framePeer) headers(id uint32, end bool, prio *http2.PriorityParam, fields ...hpack.HeaderField) {
	p.hbuf.Reset()
	for _, f := range fields {
		p.enc.WriteField(f)
	}
	hp := http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndStream: end, EndHeaders: true}
	if prio != nil {
		hp.Priority = *prio
	}
	if err := p.fr.WriteHeaders(hp); err != nil {
		p.t.Fatal(err)
	}
}

func (p *framePeer) data(id uint32, end bool, s string) {
	if err := p.fr.WriteData(id, end, []byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *framePeer) next() http2.Frame {
	p.t.Helper()
	f, err := p.fr.ReadFrame()
	if err != nil {
		p.t.Fatalf("reading the server's frames: %v", err)
	}
	return f
}

func hf(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// get is a well-formed GET; connectTo a well-formed CONNECT.
func get(extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{hf(":method", "GET"), hf(":scheme", "https"), hf(":path", "/"), hf(":authority", "skiff.test")}, extra...)
}

func connectTo(extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{hf(":method", "CONNECT"), hf(":authority", testAuthority.String())}, extra...)
}

// expectation reads what the server sends until it can judge it.
type expectation func(p *framePeer)

// streamError expects RST_STREAM with code on stream id.
func streamError(id uint32, code http2.ErrCode) expectation {
	return func(p *framePeer) {
		p.t.Helper()
		for {
			switch f := p.next().(type) {
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					if f.ErrCode != code {
						p.t.Fatalf("RST_STREAM %v on stream %d, want %v", f.ErrCode, id, code)
					}
					return
				}
			case *http2.GoAwayFrame:
				p.t.Fatalf("GOAWAY %v, want RST_STREAM %v on stream %d", f.ErrCode, code, id)
			}
		}
	}
}

// connError expects GOAWAY with code.
func connError(code http2.ErrCode) expectation {
	return func(p *framePeer) {
		p.t.Helper()
		for {
			if f, ok := p.next().(*http2.GoAwayFrame); ok {
				if f.ErrCode != code {
					p.t.Fatalf("GOAWAY %v, want %v", f.ErrCode, code)
				}
				return
			}
		}
	}
}

// answer expects a response with status on stream id, carrying body.
func answer(id uint32, status, body string) expectation {
	return func(p *framePeer) {
		p.t.Helper()
		var got bytes.Buffer
		sawStatus := false
		for {
			switch f := p.next().(type) {
			case *http2.MetaHeadersFrame:
				if f.StreamID != id {
					continue
				}
				if s := f.PseudoValue("status"); s != status {
					p.t.Fatalf("status %q on stream %d, want %q", s, id, status)
				}
				sawStatus = true
				if f.StreamEnded() {
					if got.String() != body {
						p.t.Fatalf("body %q, want %q", got.String(), body)
					}
					return
				}
			case *http2.DataFrame:
				if f.StreamID != id {
					continue
				}
				if !sawStatus {
					p.t.Fatal("DATA before the response HEADERS")
				}
				got.Write(f.Data())
				if f.StreamEnded() {
					if got.String() != body {
						p.t.Fatalf("body %q, want %q", got.String(), body)
					}
					return
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					p.t.Fatalf("RST_STREAM %v on stream %d, want a %s response", f.ErrCode, id, status)
				}
			case *http2.GoAwayFrame:
				p.t.Fatalf("GOAWAY %v, want a %s response on stream %d", f.ErrCode, status, id)
			}
		}
	}
}

// ignored expects nothing: a PING sent after the frames under test is
// answered with no stream or connection error before it. The engine
// queues its answers in order, so the PING's comes after any other.
func ignored() expectation {
	return func(p *framePeer) {
		p.t.Helper()
		mark := [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}
		if err := p.fr.WritePing(false, mark); err != nil {
			p.t.Fatal(err)
		}
		if err := p.bw.Flush(); err != nil {
			p.t.Fatal(err)
		}
		for {
			switch f := p.next().(type) {
			case *http2.PingFrame:
				if f.IsAck() && f.Data == mark {
					return
				}
			case *http2.RSTStreamFrame:
				p.t.Fatalf("RST_STREAM %v on stream %d, want nothing", f.ErrCode, f.StreamID)
			case *http2.GoAwayFrame:
				p.t.Fatalf("GOAWAY %v, want nothing", f.ErrCode)
			}
		}
	}
}

// then runs expectations in turn.
func then(es ...expectation) expectation {
	return func(p *framePeer) {
		for _, e := range es {
			e(p)
		}
	}
}

var serverFrameCases = []struct {
	name       string
	maxStreams uint32
	// window, if set, is the server's stream and connection window.
	window uint32
	// send writes the frames under test; some first wait for an answer.
	send func(p *framePeer)
	want expectation
}{
	// Stream states (RFC 9113 §5.1).
	{
		name: "DATA on an idle stream",
		send: func(p *framePeer) { p.data(1, true, "x") },
		want: connError(http2.ErrCodeProtocol),
	},
	{
		name: "RST_STREAM on an idle stream",
		send: func(p *framePeer) { p.fr.WriteRSTStream(1, http2.ErrCodeCancel) },
		want: connError(http2.ErrCodeProtocol),
	},
	{
		name: "WINDOW_UPDATE on an idle stream",
		send: func(p *framePeer) { p.fr.WriteWindowUpdate(1, 100) },
		want: connError(http2.ErrCodeProtocol),
	},
	{
		name: "WINDOW_UPDATE on a stream the server would open",
		send: func(p *framePeer) { p.fr.WriteWindowUpdate(2, 100) },
		want: connError(http2.ErrCodeProtocol),
	},
	{
		name: "PRIORITY on an idle stream, then HEADERS below it",
		send: func(p *framePeer) {
			p.fr.WritePriority(3, http2.PriorityParam{Weight: 10})
			p.headers(1, true, nil, get()...)
		},
		want: answer(1, "405", notConnectBody),
	},
	{
		name: "DATA on a half-closed (remote) tunnel",
		send: func(p *framePeer) {
			p.headers(1, false, nil, connectTo()...)
			p.data(1, true, "x")
			p.data(1, false, "y")
		},
		want: streamError(1, http2.ErrCodeStreamClosed),
	},
	{
		name: "HEADERS on a half-closed (remote) tunnel",
		send: func(p *framePeer) {
			p.headers(1, false, nil, connectTo()...)
			p.data(1, true, "x")
			p.headers(1, true, nil, hf("x-trailer", "1"))
		},
		want: streamError(1, http2.ErrCodeStreamClosed),
	},
	{
		name: "DATA on a closed stream",
		send: func(p *framePeer) {
			p.headers(1, true, nil, get()...)
			p.data(1, true, "x")
		},
		want: then(answer(1, "405", notConnectBody), streamError(1, http2.ErrCodeStreamClosed)),
	},
	{
		name: "DATA after the peer's RST_STREAM",
		send: func(p *framePeer) {
			p.headers(1, false, nil, connectTo()...)
			p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			p.data(1, true, "x")
		},
		want: streamError(1, http2.ErrCodeStreamClosed),
	},
	{
		name: "DATA after our RST_STREAM is ignored",
		send: func(p *framePeer) {
			p.headers(1, false, &http2.PriorityParam{StreamDep: 1, Weight: 1}, connectTo()...)
			p.bw.Flush()
			streamError(1, http2.ErrCodeProtocol)(p)
			p.data(1, true, "in flight")
		},
		want: ignored(),
	},
	{
		name: "RST_STREAM and WINDOW_UPDATE on a closed stream are ignored",
		send: func(p *framePeer) {
			p.headers(1, true, nil, get()...)
			p.bw.Flush()
			answer(1, "405", notConnectBody)(p)
			p.fr.WriteWindowUpdate(1, 1)
			p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			p.fr.WritePriority(1, http2.PriorityParam{Weight: 1})
		},
		want: ignored(),
	},
	{
		name: "HEADERS on a closed stream",
		send: func(p *framePeer) {
			p.headers(3, true, nil, get()...)
			p.headers(1, true, nil, get()...)
		},
		want: connError(http2.ErrCodeProtocol),
	},

	// Priority (RFC 9113 §5.3.1).
	{
		name: "PRIORITY depending on itself",
		send: func(p *framePeer) { p.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1}) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "HEADERS depending on itself",
		send: func(p *framePeer) {
			p.headers(1, true, &http2.PriorityParam{StreamDep: 1, Weight: 1}, get()...)
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},

	// Malformed requests (RFC 9113 §8.1.1, §8.3.1, §8.5).
	{
		name: "no :method",
		send: func(p *framePeer) { p.headers(1, true, nil, hf(":scheme", "https"), hf(":path", "/")) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "no :scheme",
		send: func(p *framePeer) { p.headers(1, true, nil, hf(":method", "GET"), hf(":path", "/")) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "no :path",
		send: func(p *framePeer) { p.headers(1, true, nil, hf(":method", "GET"), hf(":scheme", "https")) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "empty :path",
		send: func(p *framePeer) {
			p.headers(1, true, nil, hf(":method", "GET"), hf(":scheme", "https"), hf(":path", ""))
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "duplicated :method",
		send: func(p *framePeer) { p.headers(1, true, nil, append(get(), hf(":method", "GET"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: ":status in a request",
		send: func(p *framePeer) { p.headers(1, true, nil, append(get(), hf(":status", "200"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "CONNECT with :path",
		send: func(p *framePeer) { p.headers(1, false, nil, append(connectTo(), hf(":path", "/"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "CONNECT with :scheme",
		send: func(p *framePeer) { p.headers(1, false, nil, append(connectTo(), hf(":scheme", "https"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "CONNECT without :authority",
		send: func(p *framePeer) { p.headers(1, false, nil, hf(":method", "CONNECT")) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "extended CONNECT, not enabled",
		send: func(p *framePeer) {
			p.headers(1, false, nil, hf(":method", "CONNECT"), hf(":protocol", "websocket"),
				hf(":scheme", "https"), hf(":path", "/"), hf(":authority", testAuthority.String()))
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "connection-specific header field",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("connection", "keep-alive"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "connection-specific header field on a tunnel",
		send: func(p *framePeer) { p.headers(1, false, nil, connectTo(hf("transfer-encoding", "chunked"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "TE other than trailers",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("te", "trailers, deflate"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "TE trailers",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("te", "trailers"))...) },
		want: answer(1, "405", notConnectBody),
	},
	{
		name: "uppercase header field name",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("X-Test", "1"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "content-length above the DATA",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get(hf("content-length", "10"))...)
			p.data(1, false, "test")
			p.data(1, true, "test")
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "content-length below the DATA",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get(hf("content-length", "1"))...)
			p.data(1, true, "test")
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "content-length with no DATA",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("content-length", "1"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "bad content-length",
		send: func(p *framePeer) { p.headers(1, true, nil, get(hf("content-length", "-1"))...) },
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "content-length matching the DATA",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get(hf("content-length", "8"))...)
			p.data(1, false, "test")
			p.data(1, true, "test")
		},
		want: answer(1, "405", notConnectBody),
	},
	{
		name: "trailers",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			p.data(1, false, "test")
			p.headers(1, true, nil, hf("x-trailer", "ok"))
		},
		want: answer(1, "405", notConnectBody),
	},
	{
		name: "trailers without END_STREAM",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			p.data(1, false, "test")
			p.headers(1, false, nil, hf("x-trailer", "ok"))
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "pseudo-header field in trailers",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			p.headers(1, true, nil, hf(":method", "GET"))
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},
	{
		name: "second HEADERS on a tunnel",
		send: func(p *framePeer) {
			p.headers(1, false, nil, connectTo()...)
			p.headers(1, true, nil, hf("x-trailer", "ok"))
		},
		want: streamError(1, http2.ErrCodeProtocol),
	},

	// The server's own answers.
	{
		name: "HEAD",
		send: func(p *framePeer) {
			p.headers(1, true, nil, hf(":method", "HEAD"), hf(":scheme", "https"), hf(":path", "/"))
		},
		want: answer(1, "405", ""),
	},
	{
		name: "answer body within a stream window of 1",
		send: func(p *framePeer) {
			p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
			p.headers(1, true, nil, get()...)
			p.bw.Flush()
			for {
				if f, ok := p.next().(*http2.DataFrame); ok {
					if f.StreamID != 1 || len(f.Data()) != 1 || f.StreamEnded() {
						p.t.Fatalf("DATA of %d octets on stream %d, want 1 on stream 1", len(f.Data()), f.StreamID)
					}
					break
				}
			}
			p.fr.WriteWindowUpdate(1, 1<<20)
		},
		want: streamEnd(1),
	},
	{
		name: "answer body after a SETTINGS_INITIAL_WINDOW_SIZE change",
		send: func(p *framePeer) {
			p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			p.headers(1, true, nil, get()...)
			p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		},
		want: answer(1, "405", notConnectBody),
	},
	{
		name:   "request body is dropped, its credit given back",
		window: initialWindowSize,
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			// The whole of both windows.
			p.data(1, false, strings.Repeat("x", initialWindowSize-3*16384))
			for range 3 {
				p.data(1, false, strings.Repeat("x", 16384))
			}
			p.bw.Flush()
			credited := map[uint32]bool{}
			for !credited[0] || !credited[1] {
				if f, ok := p.next().(*http2.WindowUpdateFrame); ok {
					credited[f.StreamID] = true
				}
			}
			p.data(1, true, "")
		},
		want: answer(1, "405", notConnectBody),
	},
	{
		name: "WINDOW_UPDATE beyond 2^31-1 on a stream",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			p.fr.WriteWindowUpdate(1, 1<<31-1)
			p.fr.WriteWindowUpdate(1, 1<<31-1)
		},
		want: streamError(1, http2.ErrCodeFlowControl),
	},
	{
		name: "header list beyond the limit",
		send: func(p *framePeer) {
			// Each field fits, all of them do not.
			var big []hpack.HeaderField
			for i := range 5 {
				big = append(big, hf("x-big"+strconv.Itoa(i), strings.Repeat("x", maxHeaderListSize/4)))
			}
			p.headers(1, false, nil, connectTo(big...)...)
		},
		want: answer(1, "431", ""),
	},

	// Frame size and the stream limit (RFC 9113 §4.2, §5.1.2).
	{
		name: "HEADERS beyond SETTINGS_MAX_FRAME_SIZE",
		send: func(p *framePeer) {
			p.fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1,
				make([]byte, defaultMaxFrameSize+1))
		},
		want: connError(http2.ErrCodeFrameSize),
	},
	{
		name: "DATA beyond SETTINGS_MAX_FRAME_SIZE",
		send: func(p *framePeer) {
			p.headers(1, false, nil, get()...)
			p.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, defaultMaxFrameSize+1))
		},
		want: connError(http2.ErrCodeFrameSize),
	},
	{
		name:       "HEADERS beyond the concurrent stream limit",
		maxStreams: 2,
		send: func(p *framePeer) {
			// A window of 0 holds the answers' bodies, and so their
			// streams, open.
			p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			for id := uint32(1); id <= 5; id += 2 {
				p.headers(id, true, nil, get()...)
			}
		},
		want: streamError(5, http2.ErrCodeRefusedStream),
	},
	{
		name:       "HEADERS beyond the concurrent stream limit, tunnels",
		maxStreams: 2,
		send: func(p *framePeer) {
			for id := uint32(1); id <= 5; id += 2 {
				p.headers(id, false, nil, connectTo()...)
			}
		},
		want: streamError(5, http2.ErrCodeRefusedStream),
	},
}

// streamEnd expects the rest of a response on stream id, up to its
// END_STREAM.
func streamEnd(id uint32) expectation {
	return func(p *framePeer) {
		p.t.Helper()
		for {
			switch f := p.next().(type) {
			case *http2.DataFrame:
				if f.StreamID == id && f.StreamEnded() {
					return
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					p.t.Fatalf("RST_STREAM %v on stream %d, want its END_STREAM", f.ErrCode, id)
				}
			case *http2.GoAwayFrame:
				p.t.Fatalf("GOAWAY %v, want END_STREAM on stream %d", f.ErrCode, id)
			}
		}
	}
}

func TestServerFrames(t *testing.T) {
	for _, tt := range serverFrameCases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			e := newTCPEnv(t, waitForEnd, envOpt{
				// The server waits for the test to read its GOAWAY.
				goAwayTimeout: time.Minute,
				serverCfg: func(c *ServerConfig) {
					c.MaxConcurrentStreams = tt.maxStreams
					c.StreamWindow, c.ConnWindow = tt.window, tt.window
					c.Logger = slog.New(slog.DiscardHandler)
				},
			})
			p := dialFramePeer(t, ctx, e)
			tt.send(p)
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			tt.want(p)
		})
	}
}

// The client treats frames on streams it never opened as connection
// errors too.
func TestClientFramesOnIdleStreams(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(p *framePeer)
	}{
		{"DATA", func(p *framePeer) { p.data(3, false, "x") }},
		{"RST_STREAM", func(p *framePeer) { p.fr.WriteRSTStream(3, http2.ErrCodeCancel) }},
		{"WINDOW_UPDATE", func(p *framePeer) { p.fr.WriteWindowUpdate(3, 1) }},
		{"HEADERS on a server stream", func(p *framePeer) { p.headers(2, false, nil, hf(":status", "200")) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := newStallServer(t, func(cfg *ClientConfig) { cfg.Logger = slog.New(slog.DiscardHandler) })
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
			p := &framePeer{rawPeer: newRawPeer(t, raw, tc), t: t}
			p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			raw.SetReadDeadline(time.Now().Add(time.Minute))
			if err := p.fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			// The CONNECT on stream 1 makes 3 the next idle stream.
			for {
				if f, ok := p.next().(*http2.MetaHeadersFrame); ok && f.StreamID == 1 {
					break
				}
			}
			tt.send(p)
			if err := p.bw.Flush(); err != nil {
				t.Fatal(err)
			}
			connError(http2.ErrCodeProtocol)(p)
			if r := awaitDial(t, ctx, dialed); r.err == nil {
				r.c.Close()
				t.Fatal("Dial succeeded on a connection the server broke")
			}
		})
	}
}

// FuzzCheckRequest: any header list gets a verdict, never a crash, and
// a CONNECT passes only with an authority and neither :scheme nor :path.
func FuzzCheckRequest(f *testing.F) {
	f.Add(":method\x00CONNECT\x00:authority\x0010.0.0.1:80")
	f.Add(":method\x00GET\x00:scheme\x00https\x00:path\x00/\x00te\x00trailers")
	f.Add(":method\x00GET\x00:path\x00\x00content-length\x00+1")
	f.Fuzz(func(t *testing.T, s string) {
		parts := strings.Split(s, "\x00")
		var fields []hpack.HeaderField
		for i := 0; i+1 < len(parts); i += 2 {
			fields = append(fields, hf(parts[i], parts[i+1]))
		}
		f := &http2.MetaHeadersFrame{HeadersFrame: &http2.HeadersFrame{}, Fields: fields}
		connect, err := checkRequest(f)
		if err == nil && connect {
			if f.PseudoValue("method") != "CONNECT" || f.PseudoValue("authority") == "" ||
				f.PseudoValue("scheme") != "" || f.PseudoValue("path") != "" {
				t.Fatalf("CONNECT accepted: %q", fields)
			}
		}
		if n, err := contentLength(fields); err == nil && n < -1 {
			t.Fatalf("content-length %d from %q", n, fields)
		}
	})
}

// Answers waiting for flow-control credit leave the connection's list
// when their streams are reset, however many come and go.
func TestBlockedAnswersReleased(t *testing.T) {
	ctx := testCtx(t)
	e := newTCPEnv(t, waitForEnd, envOpt{serverCfg: func(c *ServerConfig) {
		c.MaxConcurrentStreams = 4
		c.Logger = slog.New(slog.DiscardHandler)
	}})
	p := dialFramePeer(t, ctx, e)
	// A window of 0 blocks every answer's body.
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for id := uint32(1); id < 200; id += 2 {
		p.headers(id, true, nil, get()...)
		p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	ignored()(p) // all of it was read
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	for _, c := range e.srv.conns {
		c.mu.Lock()
		blocked, streams := len(c.blocked), len(c.streams)
		c.mu.Unlock()
		if blocked != 0 || streams != 0 {
			t.Errorf("after every stream was reset: %d answers blocked, %d streams open", blocked, streams)
		}
	}
}
