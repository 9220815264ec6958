package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestAcceptedRequests checks the *http.Request built from valid heads.
func TestAcceptedRequests(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, s *seenRequest)
	}{
		{"escaped path kept", "GET /a%2Fb/c%20d/%7e?x=1&y=%2F HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			r := s.req
			if got := r.URL.EscapedPath(); got != "/a%2Fb/c%20d/%7e" {
				t.Errorf("EscapedPath %q", got)
			}
			if r.URL.RawQuery != "x=1&y=%2F" || r.RequestURI != "/a%2Fb/c%20d/%7e?x=1&y=%2F" {
				t.Errorf("RawQuery %q RequestURI %q", r.URL.RawQuery, r.RequestURI)
			}
			if r.Host != "a" || r.Header["Host"] != nil {
				t.Errorf("Host %q, Header[Host] %q", r.Host, r.Header["Host"])
			}
			if r.Proto != "HTTP/1.1" || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close {
				t.Errorf("proto %s %d.%d close %v", r.Proto, r.ProtoMajor, r.ProtoMinor, r.Close)
			}
			if r.ContentLength != 0 || r.Body != http.NoBody {
				t.Errorf("ContentLength %d Body %T", r.ContentLength, r.Body)
			}
			if r.RemoteAddr == "" {
				t.Errorf("no RemoteAddr")
			}
		}},
		{"sub-delims in path", "GET /a!$&'()*+,;=:@b HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if got := s.req.URL.EscapedPath(); got != "/a!$&'()*+,;=:@b" {
				t.Errorf("EscapedPath %q", got)
			}
		}},
		{"bytes URIs do not allow in a path", "GET /a|b%7cc HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if got := s.req.URL.EscapedPath(); got != "/a%7Cb%7Cc" || s.req.URL.Path != "/a|b|c" {
				t.Errorf("EscapedPath %q Path %q", got, s.req.URL.Path)
			}
		}},
		{"header order and case", "GET / HTTP/1.1\r\nhost: a\r\nx-multi: 1\r\nX-MULTI: 2\r\ncontent-type: text/plain\r\nX-Multi:  3 \r\nX-Empty:\r\n\r\n", func(t *testing.T, s *seenRequest) {
			h := s.req.Header
			if !reflect.DeepEqual(h["X-Multi"], []string{"1", "2", "3"}) {
				t.Errorf("X-Multi %q", h["X-Multi"])
			}
			if h.Get("Content-Type") != "text/plain" || !reflect.DeepEqual(h["X-Empty"], []string{""}) {
				t.Errorf("header %v", h)
			}
		}},
		{"obs-text value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tx\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if got := s.req.Header.Get("X-A"); got != "caf\xc3\xa9\tx" {
				t.Errorf("X-A %q", got)
			}
		}},
		{"bare LF line endings", "GET / HTTP/1.1\nHost: a\nX-A: b\n\n", func(t *testing.T, s *seenRequest) {
			if s.req.Header.Get("X-A") != "b" || s.req.Host != "a" {
				t.Errorf("header %v host %q", s.req.Header, s.req.Host)
			}
		}},
		{"leading empty lines", "\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Method != "GET" {
				t.Errorf("method %q", s.req.Method)
			}
		}},
		{"absolute-form wins over Host", "GET http://x:8080/p?q HTTP/1.1\r\nHost: y\r\n\r\n", func(t *testing.T, s *seenRequest) {
			r := s.req
			if r.Host != "x:8080" || r.URL.Host != "x:8080" || r.URL.Path != "/p" || r.URL.RawQuery != "q" {
				t.Errorf("Host %q URL %#v", r.Host, r.URL)
			}
		}},
		{"absolute-form upper-case scheme", "GET HTTP://x/ HTTP/1.1\r\nHost: x\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Host != "x" {
				t.Errorf("Host %q", s.req.Host)
			}
		}},
		{"IPv6 Host", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Host != "[2001:db8::1]:80" {
				t.Errorf("Host %q", s.req.Host)
			}
		}},
		{"OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.RequestURI != "*" || s.req.URL.Path != "*" {
				t.Errorf("RequestURI %q URL %#v", s.req.RequestURI, s.req.URL)
			}
		}},
		{"CONNECT authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.URL.Host != "example.com:443" || s.req.Host != "example.com:443" {
				t.Errorf("URL %#v Host %q", s.req.URL, s.req.Host)
			}
		}},
		{"extension method", "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Method != "PURGE" {
				t.Errorf("method %q", s.req.Method)
			}
		}},
		{"Content-Length with OWS", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \r\n\r\nhello", func(t *testing.T, s *seenRequest) {
			if s.req.ContentLength != 5 || string(s.body) != "hello" {
				t.Errorf("ContentLength %d body %q", s.req.ContentLength, s.body)
			}
		}},
		{"Transfer-Encoding tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", func(t *testing.T, s *seenRequest) {
			r := s.req
			if r.ContentLength != -1 || !reflect.DeepEqual(r.TransferEncoding, []string{"chunked"}) || string(s.body) != "hello" {
				t.Errorf("ContentLength %d TE %q body %q", r.ContentLength, r.TransferEncoding, s.body)
			}
			if r.Header["Transfer-Encoding"] != nil {
				t.Errorf("Transfer-Encoding left in Header")
			}
		}},
		{"Transfer-Encoding upper case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.ContentLength != -1 || len(s.body) != 0 || s.bodyErr != nil {
				t.Errorf("ContentLength %d body %q err %v", s.req.ContentLength, s.body, s.bodyErr)
			}
		}},
		{"chunk extensions", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;a\r\nhello\r\n1 ; b = c ;d=\"q\\\"x\"\r\n!\r\nA;e=f\r\n0123456789\r\n0;last\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.bodyErr != nil || string(s.body) != "hello!0123456789" {
				t.Errorf("body %q err %v", s.body, s.bodyErr)
			}
		}},
		{"chunked with trailers", "POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum, Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Sum: 42\r\nContent-Length: 9\r\nHost: evil\r\nX-Other: o\r\n\r\n", func(t *testing.T, s *seenRequest) {
			want := http.Header{"X-Sum": {"42"}, "X-Other": {"o"}}
			if s.bodyErr != nil || !reflect.DeepEqual(s.trailer, want) {
				t.Errorf("trailer %v err %v, want %v", s.trailer, s.bodyErr, want)
			}
		}},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Host != "" || s.req.ProtoMinor != 0 || !s.req.Close {
				t.Errorf("Host %q minor %d close %v", s.req.Host, s.req.ProtoMinor, s.req.Close)
			}
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Close {
				t.Errorf("Close set")
			}
		}},
		{"Connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if !s.req.Close {
				t.Errorf("Close not set")
			}
		}},
		{"h2c upgrade is just a header", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", func(t *testing.T, s *seenRequest) {
			if s.req.Header.Get("Upgrade") != "h2c" {
				t.Errorf("Upgrade %q", s.req.Header.Get("Upgrade"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sv := serve(t, ServerConfig{Handler: rec})
			sv.send(t, tt.raw)
			tt.check(t, rec.next(t))
			resp := sv.response(t, "GET")
			if resp.StatusCode != 200 || body(t, resp) != "ok" {
				t.Errorf("status %d", resp.StatusCode)
			}
			if up := resp.Header.Get("Upgrade"); up != "" {
				t.Errorf("server answered Upgrade: %s", up)
			}
		})
	}
}

func TestKeepAlive(t *testing.T) {
	rec := newRecorder()
	rec.then = func(w http.ResponseWriter, r *http.Request, _ []byte, _ error) {
		io.WriteString(w, r.URL.Path)
	}
	sv := serve(t, ServerConfig{Handler: rec})
	for _, p := range []string{"/1", "/2", "/3"} {
		sv.send(t, "POST "+p+" HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxy")
		resp := sv.response(t, "POST")
		if got := body(t, resp); got != p || resp.Close {
			t.Errorf("body %q close %v, want %q and keep-alive", got, resp.Close, p)
		}
		if s := rec.next(t); string(s.body) != "xy" {
			t.Errorf("request body %q", s.body)
		}
	}
	sv.send(t, "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	resp := sv.response(t, "GET")
	if got := body(t, resp); got != "/last" || !resp.Close {
		t.Errorf("body %q close %v", got, resp.Close)
	}
	sv.expectClosed(t)
	if err := sv.serveResult(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestPipelined(t *testing.T) {
	rec := newRecorder()
	rec.then = func(w http.ResponseWriter, r *http.Request, b []byte, _ error) {
		io.WriteString(w, r.URL.Path+":"+string(b))
	}
	sv := serve(t, ServerConfig{Handler: rec})
	sv.send(t, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbee\r\n0\r\n\r\n"+
		"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ncee"+
		"GET /d HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []string{"/a:", "/b:bee", "/c:cee", "/d:"} {
		if got := body(t, sv.response(t, "GET")); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestHTTP10(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: newRecorder()})
		sv.send(t, "GET / HTTP/1.0\r\n\r\n")
		resp := sv.response(t, "GET")
		if body(t, resp) != "ok" || !resp.Close || resp.Proto != "HTTP/1.1" {
			t.Errorf("close %v proto %s", resp.Close, resp.Proto)
		}
		sv.expectClosed(t)
	})
	t.Run("keep-alive", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: newRecorder()})
		for range 2 {
			sv.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp := sv.response(t, "GET")
			if body(t, resp) != "ok" || resp.Header.Get("Connection") != "keep-alive" || resp.ContentLength != 2 {
				t.Errorf("Connection %q ContentLength %d", resp.Header.Get("Connection"), resp.ContentLength)
			}
		}
	})
	t.Run("keep-alive, unknown length", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(make([]byte, 3*bufSize)) // too big to get a Content-Length
			w.(http.Flusher).Flush()
			io.WriteString(w, "end")
		})})
		sv.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp := sv.response(t, "GET")
		if b := body(t, resp); len(b) != 3*bufSize+3 || !resp.Close || resp.TransferEncoding != nil {
			t.Errorf("body %d bytes, close %v, TE %q", len(b), resp.Close, resp.TransferEncoding)
		}
		sv.expectClosed(t)
	})
}

func TestExpectContinue(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
	t.Run("body read", func(t *testing.T) {
		rec := newRecorder()
		sv := serve(t, ServerConfig{Handler: rec})
		sv.send(t, head)
		resp := sv.response(t, "POST")
		if resp.StatusCode != 100 {
			t.Fatalf("status %d, want 100", resp.StatusCode)
		}
		sv.send(t, "hello")
		resp = sv.response(t, "POST")
		if resp.StatusCode != 200 || body(t, resp) != "ok" || resp.Close {
			t.Errorf("status %d close %v", resp.StatusCode, resp.Close)
		}
		if s := rec.next(t); string(s.body) != "hello" {
			t.Errorf("body %q", s.body)
		}
	})
	t.Run("body not read", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
		})})
		sv.send(t, head)
		resp := sv.response(t, "POST")
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Errorf("status %d close %v, want 413 and close", resp.StatusCode, resp.Close)
		}
		body(t, resp)
		sv.expectClosed(t)
	})
}

// rawHead reads response heads up to a final (non-1xx) one, for checks
// on the exact bytes.
func rawHead(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	final := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading head: %v (so far %q)", err, b.String())
		}
		if strings.HasPrefix(line, "HTTP/") && (!strings.HasPrefix(line, "HTTP/1.1 1") || strings.HasPrefix(line, "HTTP/1.1 101")) {
			final = true
		}
		b.WriteString(line)
		if line == "\r\n" && final {
			return b.String()
		}
	}
}

func TestResponseFraming(t *testing.T) {
	tests := []struct {
		name    string
		request string
		handler http.HandlerFunc
		head    string // exact head expected
		body    string // exact bytes expected after the head
	}{
		{"small body gets a length", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-B", "2")
				w.Header().Add("X-A", "1")
				w.Header().Add("X-A", "0")
				io.WriteString(w, "hello")
			},
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 0\r\nX-B: 2\r\n\r\n", "hello"},
		{"empty response", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {},
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		{"flushed body is chunked", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush()
				io.WriteString(w, "lo")
			},
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"},
		{"handler's Content-Length", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush()
				io.WriteString(w, "lo")
			},
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello"},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			},
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", ""},
		{"HEAD without length", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
			"HTTP/1.1 200 OK\r\n\r\n", ""},
		{"204", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(204)
				if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
					t.Errorf("Write on 204: %v", err)
				}
			},
			"HTTP/1.1 204 No Content\r\n\r\n", ""},
		{"304", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Etag", `"x"`)
				w.WriteHeader(304)
			},
			"HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n", ""},
		{"unknown status", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) },
			"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n", ""},
		{"103 then 200", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</s.css>; rel=preload")
				w.WriteHeader(103)
				w.WriteHeader(103)
				w.Header().Del("Link")
				io.WriteString(w, "ok")
			},
			"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok"},
		{"declared trailers", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
				io.WriteString(w, "ok")
				w.Header().Set("Grpc-Status", "0")
				w.Header().Set("Grpc-Message", "fine")
			},
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status, Grpc-Message\r\n\r\n", "2\r\nok\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: fine\r\n\r\n"},
		{"prefix trailers", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
				w.Header().Set(http.TrailerPrefix+"X-Sum", "1")
				w.Header().Set(http.TrailerPrefix+"Host", "no")
			},
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n"},
		{"invalid fields left out", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) {
				w.Header()["X-Bad"] = []string{"a\r\nInjected: 1"}
				w.Header()["Bad Name"] = []string{"x"}
				w.Header()["X-Good"] = []string{"ok"}
				w.Header()["Transfer-Encoding"] = []string{"gzip"}
			},
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Good: ok\r\n\r\n", ""},
		{"handler asks to close", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Connection", "close") },
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv := serve(t, ServerConfig{Handler: tt.handler})
			sv.send(t, tt.request+"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
			sv.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if got := rawHead(t, sv.br); got != tt.head {
				t.Errorf("head\n%q, want\n%q", got, tt.head)
			}
			got := make([]byte, len(tt.body))
			if _, err := io.ReadFull(sv.br, got); err != nil || string(got) != tt.body {
				t.Errorf("body %q (%v), want %q", got, err, tt.body)
			}
			if strings.Contains(tt.head, "Connection: close") {
				sv.expectClosed(t)
				return
			}
			// The next response follows at once: the framing was right.
			if next := rawHead(t, sv.br); !strings.Contains(next, "\r\nConnection: close\r\n") {
				t.Errorf("next response's head %q", next)
			}
		})
	}
}

func TestResponseWriterErrors(t *testing.T) {
	t.Run("write past Content-Length", func(t *testing.T) {
		errc := make(chan error, 1)
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, err := io.WriteString(w, "abcd")
			errc <- err
			io.WriteString(w, "abc")
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if b := body(t, sv.response(t, "GET")); b != "abc" {
			t.Errorf("body %q", b)
		}
		if err := <-errc; err != http.ErrContentLength {
			t.Errorf("error %v, want ErrContentLength", err)
		}
	})
	t.Run("short body closes", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := sv.response(t, "GET")
		if _, err := io.ReadAll(resp.Body); err != io.ErrUnexpectedEOF {
			t.Errorf("read error %v, want ErrUnexpectedEOF", err)
		}
	})
	t.Run("abort handler mid-body", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := sv.response(t, "GET")
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("truncated chunked body read without error")
		}
		if err := sv.serveResult(t); err == nil {
			t.Errorf("Serve returned nil")
		}
	})
	t.Run("panic before writing", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "never sent")
			panic(http.ErrAbortHandler)
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		sv.expectClosed(t)
	})
}

func TestUnreadBody(t *testing.T) {
	ignore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ignored") })
	t.Run("small is dropped, connection kept", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: ignore})
		sv.send(t, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		go func() {
			sv.client.Write([]byte("400\r\n" + strings.Repeat("x", 1024) + "\r\n0\r\n\r\n"))
			sv.client.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
		}()
		for range 2 {
			if resp := sv.response(t, "POST"); body(t, resp) != "ignored" || resp.Close {
				t.Errorf("close %v", resp.Close)
			}
		}
	})
	t.Run("the response does not wait for a slow upload", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: ignore, ReadTimeout: time.Hour})
		sv.send(t, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\nfirst half")
		if resp := sv.response(t, "POST"); body(t, resp) != "ignored" || resp.Close {
			t.Errorf("close %v", resp.Close)
		}
		sv.send(t, "and the restGET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp := sv.response(t, "GET"); body(t, resp) != "ignored" {
			t.Errorf("second response")
		}
	})
	t.Run("large is not read, connection closed", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: ignore})
		go func() {
			sv.client.Write([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"))
			sv.client.Write(make([]byte, 1<<20))
		}()
		resp := sv.response(t, "POST")
		if body(t, resp) != "ignored" || !resp.Close {
			t.Errorf("close %v", resp.Close)
		}
		sv.expectClosed(t)
	})
	t.Run("large chunked is read up to the limit, connection closed", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: ignore})
		go func() {
			sv.client.Write([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"))
			chunk := []byte("10000\r\n" + strings.Repeat("x", 1<<16) + "\r\n")
			for range 8 {
				if _, err := sv.client.Write(chunk); err != nil {
					return
				}
			}
		}()
		// The response goes first; the connection closes once dropping
		// the body has gone past the limit.
		resp := sv.response(t, "POST")
		if body(t, resp) != "ignored" {
			t.Errorf("body")
		}
		sv.expectClosed(t)
	})
}

func TestHijack(t *testing.T) {
	t.Run("after 101, buffered bytes kept", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer c.Close()
			// Echo what the client sent, the bytes buffered before the
			// hijack included, until it half-closes.
			io.Copy(c, brw)
		})})
		// The client sends its first bytes with the request, before
		// seeing the 101.
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly;")
		head := rawHead(t, sv.br)
		want := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		if head != want {
			t.Fatalf("head %q, want %q", head, want)
		}
		sv.send(t, "late")
		sv.client.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(sv.br)
		if err != nil || string(got) != "early;late" {
			t.Errorf("echo %q (%v)", got, err)
		}
		if err := sv.serveResult(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Run("before any write", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer c.Close()
			if _, err := w.Write([]byte("x")); err != http.ErrHijacked {
				t.Errorf("Write after Hijack: %v", err)
			}
			rest, _ := brw.Reader.Peek(brw.Reader.Buffered())
			io.WriteString(c, "raw:"+string(rest))
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\nafter")
		got, _ := io.ReadAll(sv.br)
		if string(got) != "raw:after" && string(got) != "raw:" {
			t.Errorf("got %q", got)
		}
	})
}

func TestRequestContext(t *testing.T) {
	t.Run("canceled when the client goes away", func(t *testing.T) {
		started := make(chan struct{})
		ended := make(chan error, 1)
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-r.Context().Done()
			ended <- r.Context().Err()
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		<-started
		sv.client.Close()
		if err := <-ended; err != context.Canceled {
			t.Errorf("context error %v", err)
		}
	})
	t.Run("not canceled by a pipelined request", func(t *testing.T) {
		release := make(chan struct{})
		var errs []error
		sv := serve(t, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/1" {
				<-release
			}
			errs = append(errs, r.Context().Err())
		})})
		sv.send(t, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
		sv.send(t, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
		close(release)
		sv.response(t, "GET")
		sv.response(t, "GET")
		if errs[0] != nil || errs[1] != nil {
			t.Errorf("context errors %v", errs)
		}
	})
	t.Run("BaseContext", func(t *testing.T) {
		type key struct{}
		base := context.WithValue(context.Background(), key{}, "v")
		sv := serve(t, ServerConfig{BaseContext: base, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Context().Value(key{}).(string))
		})})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if b := body(t, sv.response(t, "GET")); b != "v" {
			t.Errorf("body %q", b)
		}
	})
	t.Run("Serve's context ends the connection", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		c, s := tcpPair(t)
		result := make(chan error, 1)
		go func() { result <- Serve(ctx, s, ServerConfig{Handler: newRecorder()}) }()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("response %v %v", resp, err)
		}
		cancel()
		if err := <-result; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func TestTimeouts(t *testing.T) {
	t.Run("stalled head", func(t *testing.T) {
		rec := newRecorder()
		sv := serve(t, ServerConfig{Handler: rec, ReadHeaderTimeout: 50 * time.Millisecond})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\nX-Half")
		sv.expectClosed(t)
		if err := sv.serveResult(t); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Errorf("Serve: %v, want a timeout", err)
		}
		rec.none(t)
	})
	t.Run("silent client", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: newRecorder(), ReadHeaderTimeout: 50 * time.Millisecond})
		sv.expectClosed(t)
		if err := sv.serveResult(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		sv := serve(t, ServerConfig{Handler: newRecorder(), IdleTimeout: 50 * time.Millisecond})
		sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		body(t, sv.response(t, "GET"))
		sv.expectClosed(t)
		if err := sv.serveResult(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Run("stalled body", func(t *testing.T) {
		rec := newRecorder()
		sv := serve(t, ServerConfig{Handler: rec, ReadTimeout: 50 * time.Millisecond})
		sv.send(t, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
		if s := rec.next(t); !isTimeout(s.bodyErr) {
			t.Errorf("body error %v, want a timeout", s.bodyErr)
		}
	})
	t.Run("client stops reading", func(t *testing.T) {
		// net.Pipe has no buffer: the first write the client does not
		// read stalls.
		c, s := net.Pipe()
		werr := make(chan error, 1)
		sv := serveOn(t, c, s, ServerConfig{WriteTimeout: 50 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 64<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					werr <- err
					return
				}
			}
		})})
		go io.WriteString(sv.client, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := <-werr; !isTimeout(err) {
			t.Errorf("Write error %v, want a timeout", err)
		}
		if err := sv.serveResult(t); err == nil {
			t.Errorf("Serve returned nil")
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestServeConfig(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	if err := Serve(context.Background(), s, ServerConfig{}); err == nil {
		t.Errorf("Serve without a Handler returned nil")
	}
}

// TestDrain: once ServerConfig.Drain ends, the request in flight is
// answered with "Connection: close" and a connection waiting for its next
// request is closed, so that keep-alive clients move elsewhere.
func TestDrain(t *testing.T) {
	tests := []struct {
		name string
		// drainAt: "start" before any request, "idle" after one
		// kept-alive exchange, "handler" while the handler runs.
		drainAt string
	}{
		{"before the first request", "start"},
		{"while waiting for the next request", "idle"},
		{"while a request is served", "handler"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drain, startDrain := context.WithCancel(context.Background())
			defer startDrain()
			inHandler, release := make(chan struct{}), make(chan struct{})
			rec := newRecorder()
			rec.then = func(w http.ResponseWriter, r *http.Request, _ []byte, _ error) {
				if r.URL.Path == "/slow" {
					close(inHandler)
					<-release
				}
				io.WriteString(w, "ok")
			}
			sv := serve(t, ServerConfig{Handler: rec, Drain: drain})
			switch tt.drainAt {
			case "start":
				startDrain()
				sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			case "idle":
				sv.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp := sv.response(t, "GET"); body(t, resp) != "ok" || resp.Close {
					t.Fatalf("before the drain: close %v, want keep-alive", resp.Close)
				}
				startDrain()
				// Closed without a request: nothing to read.
				sv.expectClosed(t)
				if err := sv.serveResult(t); err != nil {
					t.Errorf("Serve: %v", err)
				}
				return
			case "handler":
				sv.send(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
				<-inHandler
				startDrain()
				close(release)
			}
			resp := sv.response(t, "GET")
			if got := body(t, resp); got != "ok" || !resp.Close {
				t.Errorf("body %q close %v, want ok and Connection: close", got, resp.Close)
			}
			sv.expectClosed(t)
			if err := sv.serveResult(t); err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
}
