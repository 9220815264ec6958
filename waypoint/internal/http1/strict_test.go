package http1

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// smuggled is sent after every probe: the handler must never see it.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

// TestRejectedHeads sends requests whose heads break a rule: each is
// answered with its status and Connection: close, the connection ends,
// and the handler sees neither the request nor the bytes after it.
func TestRejectedHeads(t *testing.T) {
	long := strings.Repeat("a", DefaultMaxHeaderBytes)
	var many strings.Builder
	for i := range DefaultMaxHeaderCount + 1 {
		many.WriteString("X-H")
		many.WriteString(strings.Repeat("i", i%7))
		many.WriteString(": v\r\n")
	}
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		// Framing.
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"duplicate CL equal", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"duplicate CL different", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"CL with sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400},
		{"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400},
		{"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\nhello", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400},
		{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400},
		{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
		{"TE space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\vchunked\r\n\r\n0\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		// Field syntax.
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400},
		{"space before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400},
		{"bare CR line end", "GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400},
		{"CR CR LF", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400},
		{"space in name", "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400},
		{"non-token name", "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400},
		// Host.
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"two Hosts in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
		{"Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host bad port", "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"Host bad IPv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400},
		// Request line.
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
		{"no version", "GET /\r\nHost: a\r\n\r\n", 400},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"non-ASCII target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CTL in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bad method", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CONNECT origin-form", "CONNECT /a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CONNECT without port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute-form userinfo", "GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute-form ftp", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute-form no host", "GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"version garbage", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400},
		{"version two digits", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
		{"too many empty lines", strings.Repeat("\r\n", maxLeadingEmptyLines+1) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"unknown expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417},
		// Limits.
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + many.String() + "\r\n", 431},
		{"huge field", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + long + "\r\n\r\n", 431},
		{"huge request line", "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sv := serve(t, ServerConfig{Handler: rec})
			go sv.client.Write([]byte(tt.raw + smuggled))
			resp := sv.response(t, http.MethodGet)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if !resp.Close {
				t.Errorf("response does not say Connection: close")
			}
			if b := body(t, resp); b == "" {
				t.Errorf("empty error body")
			}
			sv.expectClosed(t)
			var pe *ProtocolError
			if err := sv.serveResult(t); !errors.As(err, &pe) || pe.Status != tt.status {
				t.Errorf("Serve returned %v, want a *ProtocolError with status %d", err, tt.status)
			}
			rec.none(t)
		})
	}
}

// TestRejectedBodies sends requests with valid heads but malformed
// chunked bodies: the client gets 400 and a closed connection, and the
// bytes after the body never reach the handler. A malformed chunk that
// arrived with the head is found before the handler runs, which then
// never sees the request (so no backend sees it); one found later is a
// *ProtocolError from Body.Read.
func TestRejectedBodies(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	tests := []struct{ name, body string }{
		{"size 0x5", "0x5\r\nhello\r\n0\r\n\r\n"},
		{"space before size", " 5\r\nhello\r\n0\r\n\r\n"},
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n"},
		{"tab after size", "5\t\r\nhello\r\n0\r\n\r\n"},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"17 hex digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"size overflows int64", "8000000000000000\r\nhello\r\n0\r\n\r\n"},
		{"empty size", "\r\nhello\r\n0\r\n\r\n"},
		{"extension without name", "5;\r\nhello\r\n0\r\n\r\n"},
		{"extension =value only", "5;=x\r\nhello\r\n0\r\n\r\n"},
		{"extension garbage", "5;a b\r\nhello\r\n0\r\n\r\n"},
		{"extension unterminated quote", "5;a=\"x\r\nhello\r\n0\r\n\r\n"},
		{"extension bad byte", "5;a=\x01\r\nhello\r\n0\r\n\r\n"},
		{"extension empty value", "5;a=\r\nhello\r\n0\r\n\r\n"},
		{"extension trailing space", "5;a \r\nhello\r\n0\r\n\r\n"},
		{"extension too long", "5;a=" + strings.Repeat("b", bufSize) + "\r\nhello\r\n0\r\n\r\n"},
		{"missing CRLF after data", "5\r\nhelloX0\r\n\r\n"},
		{"LF after data", "5\r\nhello\n0\r\n\r\n"},
		{"CR only after data", "5\r\nhello\r0\r\n\r\n"},
		{"LF after size", "5\nhello\r\n0\r\n\r\n"},
		{"bare CR in size line", "5\rx\r\nhello\r\n0\r\n\r\n"},
		{"chunk longer than size", "3\r\nhello\r\n0\r\n\r\n"},
		{"trailer obs-fold", "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"},
		{"trailer bad name", "5\r\nhello\r\n0\r\nX T: a\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sv := serve(t, ServerConfig{Handler: rec})
			go sv.client.Write([]byte(head + tt.body + smuggled))
			resp := sv.response(t, http.MethodPost)
			var pe *ProtocolError
			select {
			case seen := <-rec.seen:
				if !errors.As(seen.bodyErr, &pe) || pe.Status != http.StatusBadRequest {
					t.Errorf("Body.Read error %v, want a *ProtocolError with status 400", seen.bodyErr)
				}
			default:
			}
			if resp.StatusCode != http.StatusBadRequest || !resp.Close {
				t.Errorf("status %d close %v, want 400 and close", resp.StatusCode, resp.Close)
			}
			body(t, resp)
			sv.expectClosed(t)
			if err := sv.serveResult(t); !errors.As(err, &pe) {
				t.Errorf("Serve returned %v, want a *ProtocolError", err)
			}
			rec.none(t)
		})
	}
}

// TestChunkExtensionFlood checks that extensions can't cost more than
// the data they ride on: many tiny chunks with long extensions fail.
func TestChunkExtensionFlood(t *testing.T) {
	rec := newRecorder()
	sv := serve(t, ServerConfig{Handler: rec})
	ext := ";e=" + strings.Repeat("x", 4000)
	var b strings.Builder
	b.WriteString("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 16 {
		b.WriteString("1" + ext + "\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	go sv.client.Write([]byte(b.String()))
	seen := rec.next(t)
	var pe *ProtocolError
	if !errors.As(seen.bodyErr, &pe) {
		t.Fatalf("Body.Read error %v, want a *ProtocolError", seen.bodyErr)
	}
	if resp := sv.response(t, http.MethodPost); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
}
