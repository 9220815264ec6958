package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// rawResponse is a backend's keep-alive answer with a 1 KiB body.
var rawResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))

// serveRawKeepAlive answers every request head on c with rawResponse,
// with as little work of its own as a backend can do, so that the
// benchmark's allocations and time are the waypoint's and the tunnels'.
func serveRawKeepAlive(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if _, err := c.Write(rawResponse); err != nil {
			return
		}
	}
}

// readRawResponse reads one response with a Content-Length body into buf
// and returns its status code.
func readRawResponse(br *bufio.Reader, buf []byte) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 {
		return 0, io.ErrUnexpectedEOF
	}
	code, _ := strconv.Atoi(string(line[9:12]))
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 || length > len(buf) {
		return 0, io.ErrUnexpectedEOF
	}
	_, err = io.ReadFull(br, buf[:length])
	return code, err
}

// BenchmarkProxyHTTP1 is one client's keep-alive GETs, each answered with
// 1 KiB, through the whole request path: the client's tunnel, routing
// (no route: the service), the upstream pool, the endpoint's tunnel and
// back. Allocations counted are the whole process's: the waypoint's, and
// those of the HBONE tunnels on both sides of it.
func BenchmarkProxyHTTP1(b *testing.B) {
	b.Run("no limiter", func(b *testing.B) { benchmarkProxyHTTP1(b, nil) })
	// The proxy's share of a rate limit: the verdict's fields on every
	// answer (the limiter's own cost is ratelimit's benchmark).
	b.Run("limit fields", func(b *testing.B) {
		benchmarkProxyHTTP1(b, fixedVerdict{Allowed: true, RateLimit: `"default/bench";r=999999999;t=0`, RateLimitPolicy: `"default/bench";q=1000000000;w=1`})
	})
}

// fixedVerdict is a limiter that always answers the same.
type fixedVerdict LimitVerdict

func (v fixedVerdict) Limit(context.Context, LimitRequest) LimitVerdict { return LimitVerdict(v) }

func benchmarkProxyHTTP1(b *testing.B, lim Limiter) {
	const addr = "127.77.40.1:8080"
	st := meshstate.Config{Services: []*meshstate.Service{service("echo", echoVIP, 80, 8080)}, Workloads: []*meshstate.Workload{
		workload("echo-0", addr, "echo", hostname("echo"), 80),
	}}
	m := newMesh(b, &waypointapi.Waypoint{Services: []*waypointapi.Service{wpService("echo", echoVIP, 80, 8080, "http")}}, st, meshOptions{quiet: true, proxy: func(c *Config) {
		if lim != nil {
			c.Limiter = lim
		}
	}})
	m.startTCPEndpoint("echo-0", addr, "echo", serveRawKeepAlive)
	c, err := m.tunnel(b.Context(), echoVIP+":80")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench HTTP/1.1\r\nHost: echo.default.svc.cluster.local\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	buf := make([]byte, 4096)
	get := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		code, err := readRawResponse(br, buf)
		if err != nil || code != 200 {
			b.Fatalf("response %d, %v", code, err)
		}
	}
	for range 100 { // warm the pools
		get()
	}
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		get()
	}
}

// BenchmarkProxyHTTP2 is h2c GETs answered with 1 KiB, from 8 concurrent
// streams per CPU on one client connection, through the whole request
// path (as BenchmarkProxyHTTP1) to an h2c endpoint. Time and allocations
// are the whole process's: client, waypoint, tunnels and endpoint. Run it
// with -cpu 1 to see the waypoint's one-thread case, where writes gather.
func BenchmarkProxyHTTP2(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	m, eps := oneService(b, wpService("echo", echoVIP, 80, 8080, "http2"), meshOptions{quiet: true}, "127.77.42.1:8080")
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	client := m.http2Client()
	get := func() error {
		resp, err := client.Get("http://" + echoVIP + "/bench")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && (resp.StatusCode != 200 || n != int64(len(body))) {
			err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return err
	}
	for range 100 { // warm the pools
		if err := get(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.SetParallelism(8) // streams per GOMAXPROCS
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
