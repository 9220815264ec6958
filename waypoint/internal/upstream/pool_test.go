package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/skiffmesh/skiff/waypoint/internal/http1"
)

// countingTunnels dials endpoints in plain TCP (as for endpoints outside
// the mesh) and counts the tunnels opened.
type countingTunnels struct {
	HBONE
	dials atomic.Int64
}

func (c *countingTunnels) Tunnel(ctx context.Context, ep Endpoint, hdr http.Header) (net.Conn, error) {
	c.dials.Add(1)
	return c.HBONE.Tunnel(ctx, ep, hdr)
}

func newTestPool(t *testing.T, mod func(*Config)) (*Pool, *countingTunnels) {
	t.Helper()
	tun := &countingTunnels{}
	cfg := Config{
		Tunnels:    tun,
		NewH1:      func(c net.Conn) H1Conn { return http1.NewClientConn(c, http1.ClientConfig{}) },
		NoResponse: func(err error) bool { return errors.Is(err, http1.ErrNoResponse) },
	}
	if mod != nil {
		mod(&cfg)
	}
	p := New(cfg)
	t.Cleanup(p.Close)
	return p, tun
}

// serve serves h on a loopback listener (HTTP/1.1 and h2c) and returns
// its endpoint.
func serve(t *testing.T, h http.HandlerFunc) Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return Endpoint{Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
}

func get(t *testing.T, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", "http://backend"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "", ""
	return req
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// HTTP/1.1 connections are reused once a response has been read to its
// end, and only then.
func TestH1Reuse(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path+" "+strings.Repeat("x", 10000))
	})
	for _, tc := range []struct {
		name  string
		drain bool
		dials int64
	}{
		{"read to the end", true, 1},
		{"closed early", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, tun := newTestPool(t, nil)
			for i := range 3 {
				resp, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, fmt.Sprintf("/%d", i)), nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.drain {
					if body := readBody(t, resp); !strings.HasPrefix(body, fmt.Sprintf("/%d ", i)) {
						t.Fatalf("body %.20q", body)
					}
				} else {
					resp.Body.Close()
				}
			}
			if got := tun.dials.Load(); got != tc.dials {
				t.Errorf("%d tunnels for 3 requests, want %d", got, tc.dials)
			}
		})
	}
}

// The end of a request's context breaks its exchange, even once the
// response head is in: the body's reads fail and the connection is not
// reused.
func TestH1ContextEndsExchange(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			io.WriteString(w, "head and some")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "fast")
	})
	p, tun := newTestPool(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := p.RoundTrip(ctx, ep, HTTP1, get(t, "/slow"), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the body read on after its context ended")
	}
	resp.Body.Close()
	resp, err = p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/fast"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); body != "fast" {
		t.Errorf("body %q", body)
	}
	if got := tun.dials.Load(); got != 2 {
		t.Errorf("%d tunnels, want 2: the broken connection must not be reused", got)
	}
}

// rawBackend answers the first request on each connection, then reads
// the next request's head and closes without answering: as a backend
// that closes an idle connection just as a request is sent on it.
func rawBackend(t *testing.T) Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				http.ReadRequest(br) // and close
			}()
		}
	}()
	return Endpoint{Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
}

// A reused connection that closes before any byte of an answer refuses
// an idempotent request (safe to send again elsewhere), not a POST.
func TestH1ReusedConnectionClosedIsRefused(t *testing.T) {
	for _, tc := range []struct {
		method  string
		body    io.Reader
		refused bool
	}{
		{"GET", nil, true},
		{"DELETE", nil, true},
		{"POST", strings.NewReader("data"), false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			ep := rawBackend(t)
			p, _ := newTestPool(t, nil)
			resp, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/first"), nil)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			req, _ := http.NewRequest(tc.method, "/second", tc.body)
			_, err = p.RoundTrip(t.Context(), ep, HTTP1, req, nil)
			if err == nil {
				t.Fatal("the second request succeeded on a connection closed without answering")
			}
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, got, tc.refused)
			}
			var ce *ConnectError
			if errors.As(err, &ce) {
				t.Errorf("a failure after the tunnel opened is a ConnectError: %v", err)
			}
		})
	}
}

// A tunnel that cannot be opened is a ConnectError, for HTTP/1.1 and h2:
// the endpoint saw nothing.
func TestConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := Endpoint{Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	ln.Close() // nothing listens there now
	for _, proto := range []Protocol{HTTP1, HTTP2} {
		p, _ := newTestPool(t, nil)
		_, err := p.RoundTrip(t.Context(), dead, proto, get(t, "/"), nil)
		var ce *ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("protocol %d: %v, want a ConnectError", proto, err)
		}
		if ce.Endpoint != dead || ce.Refused() {
			t.Errorf("protocol %d: %+v", proto, ce)
		}
	}
}

// HTTP/2 requests to one endpoint share one connection: requests in
// flight at once (each waits for all to arrive) travel on one tunnel.
func TestH2Multiplexes(t *testing.T) {
	const n = 8
	var arrived sync.WaitGroup
	arrived.Add(n)
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait()
		fmt.Fprintf(w, "h%d", r.ProtoMajor)
	})
	p, tun := newTestPool(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := p.RoundTrip(t.Context(), ep, HTTP2, get(t, "/"), nil)
			if err != nil {
				errs <- err
				return
			}
			if body := readBody(t, resp); body != "h2" {
				errs <- fmt.Errorf("body %q", body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := tun.dials.Load(); got != 1 {
		t.Errorf("%d tunnels for %d concurrent h2 requests, want 1", got, n)
	}
}

// Idle connections are bounded per endpoint, swept once past the idle
// timeout, and closed with the pool.
func TestIdleBoundsSweepAndClose(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	t.Run("MaxIdlePerEndpoint", func(t *testing.T) {
		p, tun := newTestPool(t, func(c *Config) { c.MaxIdlePerEndpoint = 1 })
		// Two responses open at once need two connections; only one is
		// kept idle after them.
		r1, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, r1)
		readBody(t, r2)
		for range 2 {
			resp, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
		}
		if got := tun.dials.Load(); got != 2 {
			t.Errorf("%d tunnels, want 2", got)
		}
	})
	t.Run("Sweep", func(t *testing.T) {
		p, tun := newTestPool(t, func(c *Config) { c.IdleTimeout = 1 }) // every idle connection is stale
		for range 2 {
			resp, err := p.RoundTrip(t.Context(), ep, HTTP1, get(t, "/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			p.Sweep()
		}
		if got := tun.dials.Load(); got != 2 {
			t.Errorf("%d tunnels, want 2: the swept connection is not reused", got)
		}
		p.Sweep()
		p.mu.Lock()
		left := len(p.idle)
		p.mu.Unlock()
		if left != 0 {
			t.Errorf("%d endpoints still listed after sweeps with no connection", left)
		}
	})
	t.Run("Close", func(t *testing.T) {
		p, _ := newTestPool(t, nil)
		resp, err := p.RoundTrip(t.Context(), ep, HTTP2, get(t, "/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		p.Close()
		if _, err := p.RoundTrip(t.Context(), ep, HTTP2, get(t, "/"), nil); err == nil {
			t.Error("an h2 request succeeded on a closed pool")
		}
	})
}

// A 101 hands the caller the connection itself, to splice.
func TestH1Upgrade(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		io.WriteString(c, "echo "+line)
	})
	p, _ := newTestPool(t, nil)
	req := get(t, "/up")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "test")
	resp, err := p.RoundTrip(t.Context(), ep, HTTP1, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != 101 || !ok {
		t.Fatalf("status %d, body %T", resp.StatusCode, resp.Body)
	}
	defer rw.Close()
	io.WriteString(rw, "hi\n")
	got, _ := io.ReadAll(rw)
	if string(got) != "echo hi\n" {
		t.Errorf("got %q", got)
	}
}

// trackedBody records whether it was read and closed (by whichever
// goroutine of the transport's).
type trackedBody struct {
	io.Reader
	read, closed atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) { b.read.Store(true); return b.Reader.Read(p) }
func (b *trackedBody) Close() error               { b.closed.Store(true); return nil }

// A request whose ContentLength is 0 goes out without a body over either
// protocol, its Body closed unread: over HTTP/2 the HEADERS end the
// stream, rather than an empty DATA frame after them. Other bodies go
// out as they are.
func TestRequestBodyLength(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %q", r.ContentLength, b)
	})
	p, _ := newTestPool(t, nil)
	for proto, pname := range map[Protocol]string{HTTP1: "h1", HTTP2: "h2"} {
		for _, tc := range []struct {
			name     string
			body     string
			length   int64
			want     string
			wantRead bool
		}{
			{"zero length", "", 0, `0 ""`, false},
			{"known length", "abc", 3, `3 "abc"`, true},
			// HTTP/1.1 sends chunks, HTTP/2 DATA without a length.
			{"unknown length", "abc", -1, `-1 "abc"`, true},
		} {
			t.Run(pname+"/"+tc.name, func(t *testing.T) {
				body := &trackedBody{Reader: strings.NewReader(tc.body)}
				req := get(t, "/")
				req.Method, req.Body, req.ContentLength = "POST", body, tc.length
				resp, err := p.RoundTrip(t.Context(), ep, proto, req, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := readBody(t, resp); got != tc.want {
					t.Errorf("backend saw %s, want %s", got, tc.want)
				}
				// The transport may close the body after the response.
				resp.Body.Close()
				if body.read.Load() != tc.wantRead {
					t.Errorf("body read %v, want %v", body.read.Load(), tc.wantRead)
				}
				if tc.length == 0 && !body.closed.Load() {
					t.Error("body not closed")
				}
			})
		}
	}
}
