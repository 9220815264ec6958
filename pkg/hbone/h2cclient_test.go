package hbone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// netHTTPH2C serves h with net/http's HTTP/2 server, prior knowledge.
func netHTTPH2C(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialH2C(t *testing.T, addr string) *H2CClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewH2CClientConn(nc, H2CClientConfig{StreamWindow: 1 << 16, ConnWindow: 1 << 17})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestH2CClientRoundTrip: requests sent with H2CClientConn reach
// net/http's HTTP/2 server and ServeH2C as they were sent, and their
// answers come back whole: header, body past the windows, trailers.
func TestH2CClientRoundTrip(t *testing.T) {
	servers := map[string]string{
		"net/http": netHTTPH2C(t, http.HandlerFunc(echoH2C)),
		"ServeH2C": newH2CEnv(t, http.HandlerFunc(echoH2C), nil).ln.Addr().String(),
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 20_000) // 320 kB: past the windows
	for name, addr := range servers {
		t.Run(name, func(t *testing.T) {
			cc := dialH2C(t, addr)
			for _, tc := range []struct {
				name, method, path string
				body               []byte
				length             int64 // -1: unknown
				reqTrailer         string
				wantStatus         int
				wantBody           string
				wantHeader         map[string]string
				wantTrailer        map[string]string
			}{
				{name: "GET", method: "GET", path: "/a?b=c", wantStatus: 200,
					wantHeader: map[string]string{"X-Method": "GET", "X-Path": "/a?b=c", "X-Host": "svc.example", "X-Length": "0"}},
				{name: "POST, known length", method: "POST", path: "/p", body: []byte("hello"), length: 5, wantStatus: 200,
					wantBody: "hello", wantHeader: map[string]string{"X-Length": "5"}},
				{name: "POST, unknown length", method: "POST", path: "/p", body: []byte("hello"), length: -1, wantStatus: 200,
					wantBody: "hello", wantHeader: map[string]string{"X-Length": "-1"}},
				{name: "POST past the windows", method: "POST", path: "/p", body: big, length: int64(len(big)), wantStatus: 200,
					wantBody: string(big)},
				{name: "request trailer", method: "POST", path: "/p", body: []byte("x"), length: -1, reqTrailer: "t1",
					wantStatus: 200, wantBody: "x", wantTrailer: map[string]string{"X-Echo-Trailer": "t1"}},
				{name: "response trailer", method: "POST", path: "/declared", body: []byte("y"), length: 1, wantStatus: 200,
					wantBody: "y", wantTrailer: map[string]string{"X-Declared": "late"}},
				{name: "204", method: "GET", path: "/nocontent", wantStatus: 204},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var body io.ReadCloser
					if tc.body != nil {
						body = io.NopCloser(bytes.NewReader(tc.body))
					}
					req, err := http.NewRequestWithContext(testCtx(t), tc.method, "http://"+addr+tc.path, body)
					if err != nil {
						t.Fatal(err)
					}
					req.ContentLength = tc.length
					req.Host = "svc.example"
					if tc.reqTrailer != "" {
						req.Trailer = http.Header{"X-Req-Trailer": nil}
						req.Body = &trailerBody{r: req.Body, req: req, v: tc.reqTrailer}
					}
					if err := cc.Reserve(); err != nil {
						t.Fatal(err)
					}
					resp, err := cc.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != tc.wantStatus || string(got) != tc.wantBody {
						t.Errorf("%d with %d bytes, want %d with %d", resp.StatusCode, len(got), tc.wantStatus, len(tc.wantBody))
					}
					if tc.wantStatus == http.StatusNoContent && resp.ContentLength != 0 {
						t.Errorf("ContentLength %d, want 0", resp.ContentLength)
					}
					for k, v := range tc.wantHeader {
						if resp.Header.Get(k) != v {
							t.Errorf("%s: %q, want %q", k, resp.Header.Get(k), v)
						}
					}
					for k, v := range tc.wantTrailer {
						if resp.Trailer.Get(k) != v {
							t.Errorf("trailer %s: %q, want %q (%v)", k, resp.Trailer.Get(k), v, resp.Trailer)
						}
					}
				})
			}
			if !cc.Idle() {
				t.Error("the connection is not idle after its requests")
			}
		})
	}
}

// TestH2CClientAbandon: a request whose context ends, or whose response
// body is closed early, resets its stream, and the server's handler sees
// its own context end; the connection goes on serving.
func TestH2CClientAbandon(t *testing.T) {
	handlerDone := make(chan error, 2)
	addr := newH2CEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		if r.URL.Path == "/quick" {
			return
		}
		<-r.Context().Done()
		handlerDone <- r.Context().Err()
	}), nil).ln.Addr().String()
	cc := dialH2C(t, addr)
	for _, how := range []string{"context", "close"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if how == "context" {
				cancel()
				if _, err := io.ReadAll(resp.Body); err == nil {
					t.Error("the body read to its end after the context ended")
				}
			} else {
				resp.Body.Close()
			}
			select {
			case <-handlerDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler's context did not end")
			}
		})
	}
	req, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://"+addr+"/quick", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestH2CClientRefused: a request the server did not take (stream limit,
// GOAWAY) is reported as refused, so a pool can send it elsewhere.
func TestH2CClientRefused(t *testing.T) {
	release := make(chan struct{})
	e := newH2CEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}), func(c *H2CConfig) { c.MaxConcurrentStreams = 1 })
	addr := e.ln.Addr().String()
	cc := dialH2C(t, addr)
	// The first request holds the one stream.
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://"+addr+"/", nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	// Once the server's SETTINGS are in and the stream is open, the
	// limit holds.
	deadline := time.Now().Add(10 * time.Second)
	for cc.Reserve() == nil {
		cc.Release()
		if time.Now().After(deadline) {
			t.Fatal("Reserve keeps taking streams past the server's limit of 1")
		}
		runtime.Gosched()
	}
	if err := cc.Reserve(); !IsRefused(err) {
		t.Errorf("Reserve at the limit: %v, not refused", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	close(e.drain)
	// The GOAWAY: the connection takes no new request.
	deadline = time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://"+addr+"/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			if !IsRefused(err) {
				t.Errorf("after a GOAWAY: %v, not refused", err)
			}
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("the connection still takes requests after the drain")
		}
	}
	if IsRefused(errors.New("unexpected EOF")) || IsRefused(streamResetError{code: http2.ErrCodeInternal, remote: true}) {
		t.Error("other errors are taken for refusals")
	}
}

// TestH2CClientBadResponses: a response that breaks HTTP/2's rules on
// length fails its reader with an error, never passes for whole.
func TestH2CClientBadResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame func(p *rawPeer, id uint32)
	}{
		{"shorter than its content-length", func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200", "content-length", "10")
			p.fr.WriteData(id, true, []byte("abc"))
		}},
		{"longer than its content-length", func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200", "content-length", "2")
			p.fr.WriteData(id, true, []byte("abc"))
		}},
		{"reset half-way", func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200")
			p.fr.WriteData(id, false, []byte("abc"))
			p.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := tcpPair(t)
			cc, err := NewH2CClientConn(cli, H2CClientConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			go func() {
				p := &rawPeer{bw: bufio.NewWriter(srv)}
				p.fr = http2.NewFramer(p.bw, srv)
				p.enc = hpack.NewEncoder(&p.hbuf)
				if err := readClientPreface(srv); err != nil {
					return
				}
				p.fr.WriteSettings()
				p.bw.Flush()
				for {
					f, err := p.fr.ReadFrame()
					if err != nil {
						return
					}
					if h, ok := f.(*http2.HeadersFrame); ok {
						tc.frame(p, h.StreamID)
						p.bw.Flush()
					}
				}
			}()
			req, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://x/", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Error("the body read without an error")
			}
		})
	}
}

// FuzzH2CClientResponses feeds arbitrary server frames to a client with a
// request in flight: the round trip and its body must end, never crash
// or hang.
func FuzzH2CClientResponses(f *testing.F) {
	f.Add(frameSeed(nil, func(p *rawPeer) {
		p.writeHeaders(1, false, ":status", "200", "content-length", "3")
		p.fr.WriteData(1, false, []byte("abc"))
		p.writeHeaders(1, true, "grpc-status", "0")
	}))
	f.Add(frameSeed(nil, func(p *rawPeer) {
		p.writeHeaders(1, false, ":status", "103")
		p.writeHeaders(1, true, ":status", "204")
		p.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	}))
	f.Add(frameSeed(nil, func(p *rawPeer) {
		p.fr.WriteWindowUpdate(1, 1<<31-1)
		p.fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		cli, srv := net.Pipe()
		go io.Copy(io.Discard, srv)
		go func() {
			srv.Write(in)
			srv.Close()
		}()
		cc, err := NewH2CClientConn(cli, H2CClientConfig{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://x/", strings.NewReader("body"))
		resp, err := cc.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			t.Fatal("the round trip did not end after the server's input")
		}
	})
}

// writeHeaders writes one HEADERS frame of the name/value pairs kv.
func (p *rawPeer) writeHeaders(id uint32, end bool, kv ...string) error {
	p.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		p.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}
