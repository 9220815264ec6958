package hbone

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2cEnv serves ServeH2C on a loopback listener, a connection per
// accept, until the test ends.
type h2cEnv struct {
	ln    net.Listener
	drain chan struct{}
	wg    sync.WaitGroup
}

func newH2CEnv(t *testing.T, h http.Handler, tune func(*H2CConfig)) *h2cEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &h2cEnv{ln: ln, drain: make(chan struct{})}
	cfg := H2CConfig{Handler: h, Drain: e.drain, Logger: slog.New(slog.DiscardHandler)}
	if tune != nil {
		tune(&cfg)
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				ServeH2C(ctx, nc, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		e.wg.Wait()
	})
	return e
}

// client is Go's HTTP/2 client with prior knowledge, dialing the env.
func (e *h2cEnv) client(t *testing.T) (*http.Client, *countingDialer) {
	d := &countingDialer{addr: e.ln.Addr().String()}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DialContext: d.dial, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, d
}

type countingDialer struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func (d *countingDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", d.addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *countingDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// echoH2C answers with what it was sent: method, path, host and some
// fields in the header, the body, and trailers.
func echoH2C(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("X-Method", r.Method)
	h.Set("X-Path", r.URL.RequestURI())
	h.Set("X-Host", r.Host)
	h.Set("X-Cookie", r.Header.Get("Cookie"))
	h.Set("X-Length", strconv.FormatInt(r.ContentLength, 10))
	if v := r.Trailer.Get("X-Req-Trailer"); v != "" {
		h.Set(http.TrailerPrefix+"X-Echo-Trailer", v)
	}
	switch r.URL.Path {
	case "/declared":
		h.Set("Trailer", "X-Declared")
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		h.Set("X-Declared", "late")
		return
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
		return
	case "/stream":
		w.WriteHeader(http.StatusOK)
		for i := range 3 {
			w.Write([]byte{'a' + byte(i)})
			w.(http.Flusher).Flush()
		}
		return
	case "/abort":
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("part"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/short":
		h.Set("Content-Length", "10")
		w.Write([]byte("abc"))
		return
	}
	w.Write(body)
}

// TestH2CRequests: what net/http's HTTP/2 client sends reaches the
// handler as net/http's server would hand it over, and the handler's
// answer reaches the client whole: header, body, trailers both ways.
func TestH2CRequests(t *testing.T) {
	e := newH2CEnv(t, http.HandlerFunc(echoH2C), nil)
	c, _ := e.client(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: past the windows
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		reqTrailer         string
		wantStatus         int
		wantBody           string
		wantHeader         map[string]string
		wantTrailer        map[string]string
		wantErr            bool
	}{
		{name: "GET", method: "GET", path: "/a/b?q=1", wantStatus: 200,
			wantHeader: map[string]string{"X-Method": "GET", "X-Path": "/a/b?q=1", "X-Host": "svc.example", "X-Length": "0", "X-Cookie": "a=1; b=2"}},
		{name: "POST with a body", method: "POST", path: "/p", body: []byte("hello"), wantStatus: 200, wantBody: "hello",
			wantHeader: map[string]string{"X-Length": "5"}},
		{name: "POST of 1.6 MB", method: "POST", path: "/p", body: big, wantStatus: 200, wantBody: string(big)},
		{name: "request trailers", method: "POST", path: "/p", body: []byte("x"), reqTrailer: "t1", wantStatus: 200, wantBody: "x",
			wantTrailer: map[string]string{"X-Echo-Trailer": "t1"}},
		{name: "declared response trailer", method: "POST", path: "/declared", body: []byte("y"), wantStatus: 200, wantBody: "y",
			wantTrailer: map[string]string{"X-Declared": "late"}},
		{name: "HEAD drops the body", method: "HEAD", path: "/h", wantStatus: 200},
		{name: "204", method: "GET", path: "/nocontent", wantStatus: 204},
		{name: "flushed stream", method: "GET", path: "/stream", wantStatus: 200, wantBody: "abc"},
		{name: "aborted answer", method: "GET", path: "/abort", wantErr: true},
		{name: "answer short of its content-length", method: "GET", path: "/short", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, "http://"+e.ln.Addr().String()+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "svc.example"
			req.Header.Add("Cookie", "a=1")
			req.Header.Add("Cookie", "b=2")
			if tc.reqTrailer != "" {
				req.Trailer = http.Header{"X-Req-Trailer": nil}
				req.Body = &trailerBody{r: req.Body, req: req, v: tc.reqTrailer}
				req.ContentLength = -1
			}
			resp, err := c.Do(req)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error; status %d, body %q", resp.StatusCode, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus || resp.ProtoMajor != 2 {
				t.Errorf("%s %d, want HTTP/2.0 %d", resp.Proto, resp.StatusCode, tc.wantStatus)
			}
			if string(got) != tc.wantBody {
				t.Errorf("body of %d bytes, want %d", len(got), len(tc.wantBody))
			}
			for k, v := range tc.wantHeader {
				if resp.Header.Get(k) != v {
					t.Errorf("%s: %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			for k, v := range tc.wantTrailer {
				if resp.Trailer.Get(k) != v {
					t.Errorf("trailer %s: %q, want %q (trailers %v)", k, resp.Trailer.Get(k), v, resp.Trailer)
				}
			}
		})
	}
}

// trailerBody sets a request trailer once its body is read.
type trailerBody struct {
	r   io.Reader
	req *http.Request
	v   string
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Req-Trailer", b.v)
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// TestH2CDrain: a connection open at the drain gets a GOAWAY and is
// closed; one that comes during it serves its first request before it
// gets its own, so no request fails and no client is sent away unserved.
func TestH2CDrain(t *testing.T) {
	e := newH2CEnv(t, http.HandlerFunc(echoH2C), nil)
	c, d := e.client(t)
	get := func() {
		t.Helper()
		resp, err := c.Get("http://" + e.ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	close(e.drain)
	// The first connection ends: a new request needs a new one.
	deadline := time.Now().Add(10 * time.Second)
	for d.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the connection from before the drain is still in use")
		}
		get()
	}
	if n := d.count(); n != 2 {
		t.Errorf("%d connections, want 2: one made during the drain was refused its first request", n)
	}
}

// TestH2CIdleTimeout: a connection without streams is closed.
func TestH2CIdleTimeout(t *testing.T) {
	e := newH2CEnv(t, http.HandlerFunc(echoH2C), func(c *H2CConfig) { c.IdleTimeout = 50 * time.Millisecond })
	nc, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
}

// TestH2CBadPreface: a connection that does not start with the HTTP/2
// preface is closed with an error.
func TestH2CBadPreface(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go io.WriteString(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	err := ServeH2C(context.Background(), a, H2CConfig{Handler: http.HandlerFunc(echoH2C)})
	if err == nil {
		t.Fatal("no error")
	}
}

// TestH2CSpec runs h2spec against ServeH2C, with a handler that answers
// every request with a body: every case must pass.
func TestH2CSpec(t *testing.T) {
	bin := os.Getenv("SKIFF_H2SPEC_BIN")
	if bin == "" {
		bin, _ = exec.LookPath("h2spec")
	}
	if _, err := os.Stat(bin); bin == "" || err != nil {
		t.Skip("h2spec not installed: `make h2spec-bin` builds it, or set SKIFF_H2SPEC_BIN")
	}
	ctx := testCtx(t)
	e := newH2CEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(bytes.Repeat([]byte("h2spec "), 200))
	}), nil)
	a := e.ln.Addr().(*net.TCPAddr)
	addr := netAddr{host: a.IP.String(), port: a.Port}
	results := runH2Spec(t, ctx, bin, addr)
	for id, r := range runH2Spec(t, ctx, bin, addr, "--max-header-length", "250000", "http2/4.2/3") {
		results[id] = r
	}
	if len(results) != h2specCases {
		t.Errorf("h2spec ran %d cases, want %d", len(results), h2specCases)
	}
	var failed []string
	for _, id := range slices.Sorted(maps.Keys(results)) {
		if r := results[id]; !r.passed {
			failed = append(failed, id+": "+r.detail)
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d h2spec cases failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
}

// FuzzH2CServer feeds arbitrary frames after the preface to ServeH2C with
// a handler that reads bodies and answers with trailers: the connection
// must end, never crash or hang.
func FuzzH2CServer(f *testing.F) {
	req := []string{":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/p"}
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		p.writeHeaders(1, false, append(req, "content-length", "3", "trailer", "x-t")...)
		p.fr.WriteData(1, false, []byte("abc"))
		p.writeHeaders(1, true, "x-t", "v")
	}))
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		p.writeHeaders(1, false, append(req, "content-length", "2")...)
		p.fr.WriteData(1, true, []byte("abc"))
		p.writeHeaders(3, true, ":method", "GET", ":scheme", "http", ":path", "*")
		p.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	}))
	f.Add(frameSeed([]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, func(p *rawPeer) {
		p.writeHeaders(1, true, ":method", "OPTIONS", ":scheme", "http", ":authority", "a", ":path", "*")
		p.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
		p.fr.WritePing(false, [8]byte{})
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, peer := net.Pipe()
		go io.Copy(io.Discard, peer)
		go func() {
			io.WriteString(peer, http2.ClientPreface)
			peer.Write(in)
			peer.Close()
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			ServeH2C(context.Background(), srv, H2CConfig{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					w.Header().Set(http.TrailerPrefix+"X-Got", r.Trailer.Get("X-T"))
					w.Write([]byte("answer"))
				}),
				MaxConcurrentStreams: 4,
				StreamWindow:         1 << 16,
				ConnWindow:           1 << 17,
				Logger:               slog.New(slog.DiscardHandler),
			})
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("the connection did not end after its input")
		}
	})
}

// TestH2CSparesEnd: the handler goroutines a burst of concurrent
// requests leaves waiting on a connection end once it carries no stream.
func TestH2CSparesEnd(t *testing.T) {
	release := make(chan struct{})
	e := newH2CEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
		}
	}), nil)
	// One client connection for sure: net/http's pool may dial more for
	// a burst that comes before it has filed the first one as idle.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	cc, err := (&http.Transport{Protocols: &p}).NewClientConn(context.Background(), "http", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	get := func(path string) error {
		req, err := http.NewRequest(http.MethodGet, "http://"+e.ln.Addr().String()+path, nil)
		if err != nil {
			return err
		}
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- get("/wait") }()
	}
	close(release)
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := handlerGoroutines(); n > 0; n = handlerGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d handler goroutines wait on a connection without streams", n)
		}
		runtime.Gosched()
	}
}

// handlerGoroutines counts the goroutines serving or waiting for an
// HTTP/2 server stream.
func handlerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("hbone.(*h2Conn).runHandlers("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
