package http1

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestProxyThrough runs both sides as the waypoint does: net/http's
// client → Serve → a handler forwarding with a ClientConn → net/http's
// server, with a streamed body and trailers both ways.
func TestProxyThrough(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("X-Backend", "yes")
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte(strings.ToUpper(string(b))))
		w.Header().Set("Grpc-Status", r.Trailer.Get("X-Req-Trailer"))
	}))
	defer backend.Close()
	cc := dialClient(t, backend.Listener.Addr().String(), ClientConfig{})

	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.Body, out.ContentLength, out.Trailer = r.Body, r.ContentLength, r.Trailer
		out.Header.Del("Connection")
		resp, err := cc.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vv := range resp.Header {
			w.Header()[k] = vv
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		for k, vv := range resp.Trailer {
			w.Header()[http.TrailerPrefix+k] = vv
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go Serve(context.Background(), c, ServerConfig{Handler: proxy})
		}
	}()

	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	for i := range 3 {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/x", pr)
		req.Trailer = http.Header{"X-Req-Trailer": nil}
		go func() {
			io.WriteString(pw, "hello ")
			io.WriteString(pw, "world")
			req.Trailer.Set("X-Req-Trailer", "7")
			pw.Close()
		}()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "HELLO WORLD" || resp.Header.Get("X-Backend") != "yes" || resp.Trailer.Get("Grpc-Status") != "7" {
			t.Errorf("round %d: body %q (%v), header %v, trailer %v", i, b, err, resp.Header, resp.Trailer)
		}
	}
	if !cc.Reusable() {
		t.Error("backend connection not reusable after the round trips")
	}
}

// TestHandlerLeavesBodyReader checks that a goroutine still reading the
// request body after its handler returned does not hold the response
// back: the connection is closed instead of waited on.
func TestHandlerLeavesBodyReader(t *testing.T) {
	reading := make(chan struct{})
	sv := serve(t, ServerConfig{ReadTimeout: time.Hour, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			buf := make([]byte, 1)
			r.Body.Read(buf) // the first byte
			close(reading)
			io.Copy(io.Discard, r.Body) // stalls: the client sends no more
		}()
		<-reading
		// Return only once the goroutine is inside its second Read, as
		// the server then sees it: before that, the server would rightly
		// wait to drop the rest of the body itself.
		for rb := r.Body.(*requestBody); rb.mu.TryLock(); runtime.Gosched() {
			rb.mu.Unlock()
		}
		io.WriteString(w, "early")
	})})
	sv.send(t, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
	resp := sv.response(t, "POST")
	if body(t, resp) != "early" || !resp.Close {
		t.Errorf("close %v", resp.Close)
	}
	sv.expectClosed(t)
}
