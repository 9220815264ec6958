package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dialClient returns a ClientConn to addr.
func dialClient(t testing.TB, addr string, cfg ClientConfig) *ClientConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewClientConn(c, cfg)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// rawBackend accepts one connection and runs script on it; it returns
// the address to dial and a channel closed when the script is done.
func rawBackend(t testing.TB, script func(c net.Conn, br *bufio.Reader)) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		script(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), done
}

// readRequestHead reads a request head's bytes.
func readRequestHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\r\n" {
			return b.String(), err
		}
	}
}

func newRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// expectDone checks that cc can no longer be used.
func expectDone(t *testing.T, cc *ClientConn) {
	t.Helper()
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not done")
	}
	if cc.Reusable() {
		t.Error("Reusable after Done")
	}
}

func TestClientRequestBytes(t *testing.T) {
	tests := []struct {
		name string
		req  func(t *testing.T) *http.Request
		want string
	}{
		{"GET with escaped path", func(t *testing.T) *http.Request {
			r := newRequest(t, "GET", "http://backend/a%2Fb/c?q=1&r=%20", nil)
			r.Host = "svc.ns:8080"
			r.Header = http.Header{"X-B": {"2"}, "X-A": {"1", "0"}, "Host": {"ignored"}}
			return r
		}, "GET /a%2Fb/c?q=1&r=%20 HTTP/1.1\r\nHost: svc.ns:8080\r\nX-A: 1\r\nX-A: 0\r\nX-B: 2\r\n\r\n"},
		{"POST without body", func(t *testing.T) *http.Request {
			return newRequest(t, "POST", "http://h/", nil)
		}, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"},
		{"empty path", func(t *testing.T) *http.Request {
			r := newRequest(t, "GET", "http://h", nil)
			r.URL.ForceQuery = true
			return r
		}, "GET /? HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"OPTIONS asterisk", func(t *testing.T) *http.Request {
			r := newRequest(t, "OPTIONS", "http://h/", nil)
			r.URL.Path = "*"
			return r
		}, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"Connection close", func(t *testing.T) *http.Request {
			r := newRequest(t, "GET", "http://h/", nil)
			r.Close = true
			return r
		}, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		{"Content-Length body", func(t *testing.T) *http.Request {
			return newRequest(t, "PUT", "http://h/x", strings.NewReader("hello"))
		}, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked body with trailers", func(t *testing.T) *http.Request {
			r := newRequest(t, "POST", "http://h/x", io.NopCloser(strings.NewReader("hello")))
			r.ContentLength = -1
			r.Trailer = http.Header{"X-Sum": {"5"}, "Content-Length": {"9"}}
			return r
		}, "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 1)
			addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				head, _ := readRequestHead(br)
				rest := make([]byte, br.Buffered())
				br.Read(rest)
				if strings.Contains(head, "chunked") && !strings.HasSuffix(string(rest), "\r\n\r\n") {
					more, _ := br.ReadString('\n')
					for !strings.HasSuffix(string(rest)+more, "\r\n\r\n") {
						m, err := br.ReadString('\n')
						more += m
						if err != nil {
							break
						}
					}
					rest = append(rest, more...)
				}
				if strings.Contains(head, "Content-Length: 5") && len(rest) < 5 {
					tail := make([]byte, 5-len(rest))
					io.ReadFull(br, tail)
					rest = append(rest, tail...)
				}
				got <- head + string(rest)
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			})
			cc := dialClient(t, addr, ClientConfig{})
			resp, err := cc.RoundTrip(tt.req(t))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if g := <-got; g != tt.want {
				t.Errorf("sent\n%q, want\n%q", g, tt.want)
			}
		})
	}
}

func TestClientInvalidRequest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	bad := []func(r *http.Request){
		func(r *http.Request) { r.Header.Set("X-A", "a\r\nInjected: 1") },
		func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} },
		func(r *http.Request) { r.Method = "GET /" },
		func(r *http.Request) { r.Host = "a b" },
		func(r *http.Request) { r.URL.RawQuery = "a b" },
		func(r *http.Request) { r.ContentLength = 5 },
	}
	for i, mutate := range bad {
		req := newRequest(t, "GET", srv.URL+"/", nil)
		mutate(req)
		if _, err := cc.RoundTrip(req); err == nil || errors.Is(err, ErrNoResponse) {
			t.Errorf("case %d: error %v", i, err)
		}
		if !cc.Reusable() {
			t.Fatalf("case %d: refused request left the connection unusable", i)
		}
	}
	resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL+"/", nil))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("good request after refused ones: %v", err)
	}
}

// TestClientAgainstNetHTTP runs round trips against net/http's server.
func TestClientAgainstNetHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server reading body: %v", err)
		}
		var hk []string
		for k := range r.Header {
			hk = append(hk, k)
		}
		w.Header().Set("X-Headers", strings.Join(sorted(hk), ","))
		w.Header().Set("X-Content-Length", itoa(r.ContentLength))
		w.Header().Set("X-Trailer", r.Trailer.Get("X-Sum"))
		w.Write(b)
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		io.WriteString(w, "data")
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(103)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		w.Write(make([]byte, 1<<20))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})

	t.Run("Content-Length body", func(t *testing.T) {
		resp, err := cc.RoundTrip(newRequest(t, "POST", srv.URL+"/echo", strings.NewReader("hello")))
		if err != nil {
			t.Fatal(err)
		}
		if b := body(t, resp); b != "hello" || resp.Header.Get("X-Content-Length") != "5" {
			t.Errorf("body %q, server saw length %s", b, resp.Header.Get("X-Content-Length"))
		}
		if got := resp.Header.Get("X-Headers"); got != "Content-Length" {
			t.Errorf("server saw fields %s: something was added", got)
		}
	})
	t.Run("chunked body with trailers", func(t *testing.T) {
		pr, pw := io.Pipe()
		req := newRequest(t, "POST", srv.URL+"/echo", pr)
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Sum": nil}
		go func() {
			io.WriteString(pw, "hel")
			io.WriteString(pw, "lo")
			req.Trailer.Set("X-Sum", "42")
			pw.Close()
		}()
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := body(t, resp); b != "hello" || resp.Header.Get("X-Content-Length") != "-1" || resp.Header.Get("X-Trailer") != "42" {
			t.Errorf("body %q, length %s, trailer %q", b, resp.Header.Get("X-Content-Length"), resp.Header.Get("X-Trailer"))
		}
	})
	t.Run("response trailers", func(t *testing.T) {
		resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL+"/trailers", nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Trailer["Grpc-Status"]; !ok {
			t.Errorf("declared trailer not announced: %v", resp.Trailer)
		}
		if b := body(t, resp); b != "data" {
			t.Errorf("body %q", b)
		}
		want := http.Header{"Grpc-Status": {"0"}, "X-Late": {"late"}}
		if !reflect.DeepEqual(resp.Trailer, want) {
			t.Errorf("trailer %v, want %v", resp.Trailer, want)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp, err := cc.RoundTrip(newRequest(t, "HEAD", srv.URL+"/big", nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != 1<<20 || resp.Body != http.NoBody || !cc.Reusable() {
			t.Errorf("ContentLength %d Body %T reusable %v", resp.ContentLength, resp.Body, cc.Reusable())
		}
	})
	t.Run("204", func(t *testing.T) {
		resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL+"/nocontent", nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 204 || resp.Body != http.NoBody || !cc.Reusable() {
			t.Errorf("status %d Body %T reusable %v", resp.StatusCode, resp.Body, cc.Reusable())
		}
	})
	t.Run("103 goes to the trace hook", func(t *testing.T) {
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, itoa(int64(code))+" "+h.Get("Link"))
			return nil
		}}
		req := newRequest(t, "GET", srv.URL+"/hints", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := body(t, resp); b != "final" || !reflect.DeepEqual(got, []string{"103 </a.css>; rel=preload"}) {
			t.Errorf("body %q, 1xx %q", b, got)
		}
	})
	t.Run("100 Continue is consumed", func(t *testing.T) {
		req := newRequest(t, "PUT", srv.URL+"/echo", strings.NewReader("body"))
		req.Header.Set("Expect", "100-continue")
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || body(t, resp) != "body" {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("the connection was reused throughout", func(t *testing.T) {
		if !cc.Reusable() {
			t.Fatal("not reusable")
		}
		select {
		case <-cc.Done():
			t.Fatal("done")
		default:
		}
	})
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func itoa(n int64) string { return string(appendInt(nil, n)) }

func TestClientReuse(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 64<<10))
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	t.Run("after a fully read body", func(t *testing.T) {
		cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
		for range 3 {
			resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL, nil))
			if err != nil {
				t.Fatal(err)
			}
			if cc.Reusable() {
				t.Error("reusable before the body was read")
			}
			body(t, resp)
			if !cc.Reusable() {
				t.Fatal("not reusable after the body was read")
			}
			resp.Body.Close()
			if !cc.Reusable() {
				t.Fatal("not reusable after Close at EOF")
			}
		}
	})
	t.Run("not after an unread body", func(t *testing.T) {
		cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
		resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		expectDone(t, cc)
		if _, err := cc.RoundTrip(newRequest(t, "GET", srv.URL, nil)); !errors.Is(err, ErrConnUnusable) {
			t.Errorf("RoundTrip on a spent connection: %v", err)
		}
	})
	t.Run("not after a partial body", func(t *testing.T) {
		cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
		resp, err := cc.RoundTrip(newRequest(t, "GET", srv.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(resp.Body, make([]byte, 1000))
		resp.Body.Close()
		expectDone(t, cc)
		if _, err := resp.Body.Read(make([]byte, 1)); err != http.ErrBodyReadAfterClose {
			t.Errorf("Read after Close: %v", err)
		}
	})
	t.Run("not when the response asks to close", func(t *testing.T) {
		cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
		req := newRequest(t, "GET", srv.URL, nil)
		req.Close = true
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Close {
			t.Error("resp.Close not set")
		}
		body(t, resp)
		expectDone(t, cc)
	})
}

func TestClientEarlyResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer srv.Close()
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	pr, pw := io.Pipe()
	closed := make(chan struct{})
	req := newRequest(t, "POST", srv.URL, &closeNotifier{Reader: pr, closed: closed})
	req.ContentLength = 10 << 20
	go pw.Write(make([]byte, 1024)) // some of the body, then nothing
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d", resp.StatusCode)
	}
	body(t, resp)
	expectDone(t, cc)
	pw.CloseWithError(errors.New("client gone"))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("request body never closed")
	}
}

type closeNotifier struct {
	io.Reader
	closed chan struct{}
}

func (c *closeNotifier) Close() error { close(c.closed); return nil }

func TestClientUpgrade(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		// The first bytes go with the head, so they are buffered by the
		// client with it.
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nwelcome;")
		io.Copy(c, brw)
	}))
	defer srv.Close()
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	req := newRequest(t, "GET", srv.URL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the upgraded connection outlives the request's context
	cc.Close()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("Body %T is not an io.ReadWriteCloser", resp.Body)
	}
	defer rwc.Close()
	expectDone(t, cc)
	if _, err := io.WriteString(rwc, "ping"); err != nil {
		t.Fatal(err)
	}
	rwc.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(rwc)
	if err != nil || string(got) != "welcome;ping" {
		t.Errorf("read %q (%v)", got, err)
	}
}

func TestClientMalformedResponses(t *testing.T) {
	tests := []struct{ name, resp string }{
		{"duplicate Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
		{"bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok"},
		{"unknown Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\x00\r\nContent-Length: 0\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"},
		{"status out of range", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"},
		{"status too low", "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n"},
		{"status not digits", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
		{"HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"lower-case version", "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"not HTTP", "hello there\r\n\r\n"},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"too many 1xx", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", max1xx+2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				readRequestHead(br)
				io.WriteString(c, tt.resp)
			})
			cc := dialClient(t, addr, ClientConfig{})
			_, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrNoResponse) {
				t.Errorf("error %v wraps ErrNoResponse, but a response was received", err)
			}
			expectDone(t, cc)
		})
	}
}

func TestClientMalformedBody(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n")
	})
	cc := dialClient(t, addr, ClientConfig{})
	resp, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Status != http.StatusBadGateway {
		t.Errorf("body error %v, want a *ProtocolError with 502", err)
	}
	expectDone(t, cc)
}

func TestClientCloseDelimited(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n") // chunked wins
		io.WriteString(c, "3\r\nabc\r\n0\r\n\r\n")
		readRequestHead(br)
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil the end")
	})
	cc := dialClient(t, addr, ClientConfig{})
	resp, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); b != "abc" || resp.ContentLength != -1 || resp.Header["Content-Length"] != nil {
		t.Errorf("body %q ContentLength %d header %v", b, resp.ContentLength, resp.Header)
	}
	resp, err = cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); b != "until the end" || !resp.Close || resp.ContentLength != -1 {
		t.Errorf("body %q close %v", b, resp.Close)
	}
	expectDone(t, cc)
}

func TestClientNoResponse(t *testing.T) {
	t.Run("backend closes on the request", func(t *testing.T) {
		addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) { readRequestHead(br) })
		cc := dialClient(t, addr, ClientConfig{})
		_, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
		if !errors.Is(err, ErrNoResponse) {
			t.Errorf("error %v, want ErrNoResponse", err)
		}
		expectDone(t, cc)
	})
	t.Run("backend closes an idle connection", func(t *testing.T) {
		addr, done := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
			readRequestHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		})
		cc := dialClient(t, addr, ClientConfig{})
		if _, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil)); err != nil {
			t.Fatal(err)
		}
		<-done
		expectDone(t, cc)
		if _, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil)); !errors.Is(err, ErrNoResponse) {
			t.Errorf("error %v, want ErrNoResponse", err)
		}
	})
	t.Run("unsolicited bytes while idle", func(t *testing.T) {
		addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
			readRequestHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\n\r\n")
			io.Copy(io.Discard, br)
		})
		cc := dialClient(t, addr, ClientConfig{})
		if _, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil)); err != nil {
			t.Fatal(err)
		}
		expectDone(t, cc)
	})
}

func TestClientContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		// roundTrip sends a request whose context, or the one given in
		// its place, is ctx.
		roundTrip func(cc *ClientConn, ctx context.Context, req *http.Request) (*http.Response, error)
	}{
		{"request's", func(cc *ClientConn, ctx context.Context, req *http.Request) (*http.Response, error) {
			return cc.RoundTrip(req.WithContext(ctx))
		}},
		{"given", func(cc *ClientConn, ctx context.Context, req *http.Request) (*http.Response, error) {
			return cc.RoundTripContext(ctx, req)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				readRequestHead(br)
				<-release
			})
			defer close(release)
			cc := dialClient(t, addr, ClientConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			req := newRequest(t, "GET", "http://h/", nil)
			errc := make(chan error, 1)
			go func() {
				_, err := tc.roundTrip(cc, ctx, req)
				errc <- err
			}()
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
			expectDone(t, cc)
		})
	}
}

func TestClientTimeouts(t *testing.T) {
	t.Run("response head", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
			readRequestHead(br)
			<-release
		})
		cc := dialClient(t, addr, ClientConfig{ResponseHeaderTimeout: 50 * time.Millisecond})
		if _, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil)); !isTimeout(err) {
			t.Errorf("error %v, want a timeout", err)
		}
		expectDone(t, cc)
	})
	t.Run("stalled body", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
			readRequestHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			<-release
		})
		cc := dialClient(t, addr, ClientConfig{ReadTimeout: 50 * time.Millisecond})
		resp, err := cc.RoundTrip(newRequest(t, "GET", "http://h/", nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); !isTimeout(err) {
			t.Errorf("error %v, want a timeout", err)
		}
		expectDone(t, cc)
	})
}
