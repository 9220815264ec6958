package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

const benchRequest = "GET /api/v1/items?id=42 HTTP/1.1\r\n" +
	"Host: backend.default.svc.cluster.local:8080\r\n" +
	"User-Agent: bench/1.0\r\n" +
	"Accept: application/json\r\n" +
	"Accept-Encoding: gzip, deflate\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: session=0123456789abcdef\r\n" +
	"X-Request-Id: 7f3e9a2c-1b4d-4e8f-9a6b-2c5d8e1f0a3b\r\n" +
	"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
	"\r\n"

func BenchmarkServeKeepAlive(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	c, s := tcpPair(b)
	serveOn(b, c, s, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["X-Request-Id"] = r.Header["X-Request-Id"]
		w.Write(payload)
	})})
	// Learn the response's exact length, then read exactly that much per
	// request, so that the client side allocates nothing.
	io.WriteString(c, benchRequest)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.ContentLength != int64(len(payload)) {
		b.Fatalf("response %v %v", resp, err)
	}
	var head bytes.Buffer
	resp.Header.Write(&head)
	respLen := len("HTTP/1.1 200 OK\r\n") + head.Len() + len("\r\n") + len(payload)
	io.Copy(io.Discard, resp.Body)
	buf := make([]byte, respLen)
	req := []byte(benchRequest)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientRoundTrip(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	response := append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n"), payload...)
	c, s := tcpPair(b)
	// A backend that allocates nothing: it reads request heads and
	// answers each with the same bytes.
	go func() {
		br := bufio.NewReader(s)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) == 2 && line[0] == '\r' {
				if _, err := s.Write(response); err != nil {
					return
				}
			}
		}
	}()
	cc := NewClientConn(c, ClientConfig{})
	defer cc.Close()
	req, _ := http.NewRequest("GET", "http://backend.default.svc.cluster.local:8080/api/v1/items?id=42", nil)
	req.Header = http.Header{
		"Accept":            {"application/json"},
		"Accept-Language":   {"en-US,en;q=0.9"},
		"Cookie":            {"session=0123456789abcdef"},
		"User-Agent":        {"bench/1.0"},
		"X-Request-Id":      {"7f3e9a2c-1b4d-4e8f-9a6b-2c5d8e1f0a3b"},
		"Traceparent":       {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"X-Forwarded-For":   {"10.0.0.1"},
		"X-Forwarded-Proto": {"http"},
	}
	var sink [2048]byte
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := cc.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.ReadFull(resp.Body, sink[:1024]); n != 1024 || err != nil {
			b.Fatal(n, err)
		}
		if _, err := resp.Body.Read(sink[:]); err != io.EOF {
			b.Fatal("no EOF: ", err)
		}
		resp.Body.Close()
	}
}

// BenchmarkChunkedDecode measures the chunked decoder alone.
func BenchmarkChunkedDecode(b *testing.B) {
	var enc bytes.Buffer
	chunk := bytes.Repeat([]byte("y"), 8<<10)
	for range 128 {
		enc.WriteString("2000\r\n")
		enc.Write(chunk)
		enc.WriteString("\r\n")
	}
	enc.WriteString("0\r\n\r\n")
	raw := enc.Bytes()
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, bufSize)
	hr := &headReader{br: br, lim: Limits{}.withDefaults()}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(raw)
		br.Reset(rd)
		var body bodyReader
		body.reset(br, bodyChunked, 0, http.StatusBadRequest, hr, nil)
		for {
			if _, err := body.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

// BenchmarkWriteFields writes a proxied request's header: sorted keys,
// each checked.
func BenchmarkWriteFields(b *testing.B) {
	h := http.Header{
		"User-Agent": {"bench"}, "Accept": {"*/*"}, "X-Forwarded-For": {"10.0.0.1"},
		"Forwarded": {"for=10.0.0.1"}, "X-Request-Id": {"0123456789abcdef0123456789abcdef"},
		"X-Forwarded-Proto": {"http"}, "Content-Type": {"text/plain"},
	}
	bw := bufio.NewWriter(io.Discard)
	var scratch []string
	b.ReportAllocs()
	for b.Loop() {
		writeFields(bw, h, &scratch, nil)
	}
}

// BenchmarkParseRequestHead reads and parses benchRequest's head, header
// map included, from memory.
func BenchmarkParseRequestHead(b *testing.B) {
	src := bytes.NewReader([]byte(benchRequest))
	br := bufio.NewReaderSize(src, bufSize)
	hr := headReader{br: br, lim: Limits{}.withDefaults()}
	b.ReportAllocs()
	for b.Loop() {
		src.Reset([]byte(benchRequest))
		br.Reset(src)
		if err := hr.read(true); err != nil {
			b.Fatal(err)
		}
		var head requestHead
		if err := parseRequestHead(&hr, hr.text(), &head); err != nil {
			b.Fatal(err)
		}
	}
}
