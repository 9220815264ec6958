package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// parsedRequest is what parsing a request's bytes gives: the request, its
// body and trailers, or the error.
type parsedRequest struct {
	req  *http.Request
	body []byte
	err  error
}

// parseRequestBytes runs the server's parser over b, body included.
func parseRequestBytes(b []byte, oneByte bool) parsedRequest {
	var src io.Reader = bytes.NewReader(b)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReaderSize(src, bufSize)
	hr := &headReader{br: br, lim: Limits{MaxHeaderBytes: 4 << 10, MaxHeaderCount: 20}}
	if err := hr.read(true); err != nil {
		return parsedRequest{err: err}
	}
	var head requestHead
	if err := parseRequestHead(hr, hr.text(), &head); err != nil {
		return parsedRequest{err: err}
	}
	req := &head.req
	var body bodyReader
	body.reset(br, head.body, head.contentLength, http.StatusBadRequest, hr, &req.Trailer)
	data, err := io.ReadAll(io.LimitReader(&body, 1<<20))
	if err != nil {
		return parsedRequest{err: err}
	}
	return parsedRequest{req: req, body: data}
}

// serializeRequest writes r back as bytes, as a client would.
func serializeRequest(r *http.Request, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
	if r.Host != "" {
		fmt.Fprintf(&b, "Host: %s\r\n", r.Host)
	}
	chunked := r.ContentLength < 0
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range r.Header {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(body) > 0 {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(body), body)
		}
		b.WriteString("0\r\n")
		for k, vv := range r.Trailer {
			for _, v := range vv {
				fmt.Fprintf(&b, "%s: %s\r\n", k, v)
			}
		}
		b.WriteString("\r\n")
		return b.Bytes()
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

func checkHeader(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, vv := range h {
		if !validToken(k) || http.CanonicalHeaderKey(k) != k {
			t.Fatalf("%s key %q not a canonical token", what, k)
		}
		for _, v := range vv {
			if !validFieldValue(v) || trimOWS(v) != v {
				t.Fatalf("%s value %q invalid or not trimmed", what, v)
			}
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a%2Fb?q=1 HTTP/1.1\r\nHost: a:80\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: a\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n5;e=\"q\"\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"GET http://x/y HTTP/1.1\r\nHost: z\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"OPTIONS * HTTP/1.0\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: [::1]\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, oneByte bool) {
		p := parseRequestBytes(data, oneByte)
		if p.err != nil {
			var pe *ProtocolError
			switch {
			case errors.As(p.err, &pe):
				if pe.Status < 400 || pe.Status > 505 || pe.Reason == "" {
					t.Fatalf("ProtocolError %+v", pe)
				}
			case p.err == io.EOF, p.err == io.ErrUnexpectedEOF, p.err == errHeadTooLarge:
			default:
				t.Fatalf("unexpected error %v", p.err)
			}
			return
		}
		r := p.req
		if !validToken(r.Method) || !validTarget(r.RequestURI) || r.URL == nil {
			t.Fatalf("accepted method %q target %q", r.Method, r.RequestURI)
		}
		if r.ProtoMinor == 1 && !validAuthority(r.Host) {
			t.Fatalf("accepted HTTP/1.1 request with Host %q", r.Host)
		}
		if r.ContentLength < -1 || r.ContentLength >= 0 && int64(len(p.body)) != r.ContentLength {
			t.Fatalf("ContentLength %d, body %d bytes", r.ContentLength, len(p.body))
		}
		checkHeader(t, "header", r.Header)
		checkHeader(t, "trailer", r.Trailer)
		if strings.HasPrefix(r.RequestURI, "/") {
			// The fast path of origin-form parsing agrees with net/url.
			u, err := url.ParseRequestURI(r.RequestURI)
			if err != nil || !reflect.DeepEqual(*u, *r.URL) {
				t.Fatalf("URL %#v, net/url gives %#v (%v)", r.URL, u, err)
			}
		}

		again := parseRequestBytes(serializeRequest(r, p.body), false)
		if again.err != nil {
			t.Fatalf("re-serialized request refused: %v\n%q", again.err, serializeRequest(r, p.body))
		}
		r2 := again.req
		if r2.Method != r.Method || r2.RequestURI != r.RequestURI || r2.Host != r.Host || r2.Proto != r.Proto ||
			r2.ContentLength != r.ContentLength || r2.Close != r.Close ||
			!reflect.DeepEqual(r2.Header, r.Header) || !bytes.Equal(again.body, p.body) ||
			!reflect.DeepEqual(r2.Trailer, r.Trailer) {
			t.Fatalf("re-parse differs:\n%+v\n%+v", r, r2)
		}
		if r2.URL.String() != r.URL.String() || r2.URL.EscapedPath() != r.URL.EscapedPath() {
			t.Fatalf("URL %v, re-parsed %v", r.URL, r2.URL)
		}
	})
}

// encodeChunked is the reference encoder: data cut into chunks whose
// sizes come from rng, some with extensions, then trailers.
func encodeChunked(data []byte, rng *rand.Rand, trailer http.Header) []byte {
	var b bytes.Buffer
	for len(data) > 0 {
		n := 1 + rng.IntN(min(len(data), 300))
		size := fmt.Sprintf("%x", n)
		if rng.IntN(3) == 0 {
			size = strings.ToUpper(size)
		}
		b.WriteString(size)
		switch rng.IntN(5) {
		case 0:
			b.WriteString(";ext")
		case 1:
			b.WriteString(" ;a=b ; c = \"d\\\"e\"")
		}
		b.WriteString("\r\n")
		b.Write(data[:n])
		b.WriteString("\r\n")
		data = data[n:]
	}
	b.WriteString("0\r\n")
	for k, vv := range trailer {
		for _, v := range vv {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// decodeChunked runs the chunked decoder over enc, reading into buffers of
// sizes drawn from rng, and returns the body and trailers.
func decodeChunked(enc []byte, rng *rand.Rand, oneByte bool) ([]byte, http.Header, error) {
	var src io.Reader = bytes.NewReader(enc)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReaderSize(src, bufSize)
	hr := &headReader{br: br, lim: Limits{}.withDefaults()}
	var trailer http.Header
	var b bodyReader
	b.reset(br, bodyChunked, 0, http.StatusBadRequest, hr, &trailer)
	var out []byte
	buf := make([]byte, 512)
	for {
		n, err := b.Read(buf[:1+rng.IntN(len(buf))])
		out = append(out, buf[:n]...)
		if err == io.EOF {
			if n2, err2 := b.Read(buf); n2 != 0 || err2 != io.EOF {
				return nil, nil, fmt.Errorf("read after EOF: %d, %v", n2, err2)
			}
			return out, trailer, nil
		}
		if err != nil {
			return out, nil, err
		}
		if len(out) > 1<<20 {
			return nil, nil, errors.New("body too long for the test")
		}
	}
}

func FuzzChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), []byte("hello, world"), uint64(1), false)
	f.Add([]byte("3;a=b\r\nabc\r\n0\r\nX-T: v\r\n\r\n"), []byte{}, uint64(2), true)
	f.Add([]byte("0x3\r\nabc\r\n0\r\n\r\n"), []byte("x"), uint64(3), false)
	f.Add([]byte("ffffffffffffffff\r\n"), bytes.Repeat([]byte("data"), 500), uint64(4), false)
	f.Add([]byte("1;a=\"\\\"\"\r\nx\r\n0;z\r\n\r\n"), []byte("\r\n0\r\n\r\n"), uint64(5), true)
	f.Fuzz(func(t *testing.T, raw, data []byte, seed uint64, oneByte bool) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		// Arbitrary bytes: no panic; what is accepted survives a round
		// trip through the reference encoder.
		if body, trailer, err := decodeChunked(raw, rng, oneByte); err == nil {
			checkHeader(t, "trailer", trailer)
			again, trailer2, err := decodeChunked(encodeChunked(body, rng, trailer), rng, false)
			if err != nil || !bytes.Equal(again, body) || !reflect.DeepEqual(trailer2, trailer) {
				t.Fatalf("accepted body %q trailer %v; re-encoded: %q %v %v", body, trailer, again, trailer2, err)
			}
		} else {
			var pe *ProtocolError
			if !errors.As(err, &pe) && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
		}
		// The reference encoder's output, however cut, decodes to data.
		trailer := http.Header{"X-Sum": {fmt.Sprint(len(data))}}
		enc := encodeChunked(data, rng, trailer)
		body, got, err := decodeChunked(enc, rng, oneByte)
		if err != nil || !bytes.Equal(body, data) || !reflect.DeepEqual(got, trailer) {
			t.Fatalf("encoded %q: decoded %q %v %v", enc, body, got, err)
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nraw bytes",
		"HTTP/1.1 200\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		c, s := net.Pipe()
		defer s.Close()
		go func() {
			br := bufio.NewReader(s)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			s.Write(data)
			s.Close()
		}()
		cc := NewClientConn(c, ClientConfig{Limits: Limits{MaxHeaderBytes: 4 << 10, MaxHeaderCount: 20}})
		defer cc.Close()
		method := "GET"
		if head {
			method = "HEAD"
		}
		req, _ := http.NewRequest(method, "http://h/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			if cc.Reusable() {
				t.Fatalf("usable after %v", err)
			}
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode < 200 && resp.StatusCode != 101 || resp.StatusCode > 999 {
			t.Fatalf("status %d returned as final", resp.StatusCode)
		}
		checkHeader(t, "header", resp.Header)
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode == 101 {
			return
		}
		if err == nil && resp.ContentLength >= 0 && !head && n != resp.ContentLength {
			t.Fatalf("read %d bytes of a %d-byte body", n, resp.ContentLength)
		}
		if err == nil {
			checkHeader(t, "trailer", resp.Trailer)
		}
	})
}
