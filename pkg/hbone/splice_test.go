package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestSpliceHalfClose(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	type res struct {
		ab, ba int64
		err    error
	}
	done := make(chan res, 1)
	go func() {
		ab, ba, err := Splice(context.Background(), a, b)
		done <- res{ab, ba, err}
	}()
	req := bytes.Repeat([]byte("q"), 3<<20)
	go func() {
		client.Write(req)
		client.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(server) // EOF arrives through the splice
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d bytes, %v", len(got), err)
	}
	// The other direction is still open after the first ended.
	reply := bytes.Repeat([]byte("r"), 1<<20)
	server.Write(reply)
	server.(*net.TCPConn).CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, reply) {
		t.Fatalf("client read %d bytes, %v", len(got), err)
	}
	r := <-done
	if r.err != nil || r.ab != int64(len(req)) || r.ba != int64(len(reply)) {
		t.Fatalf("Splice = %d, %d, %v", r.ab, r.ba, r.err)
	}
}

// TestSpliceThroughTunnel proxies TCP over HBONE like ztunnel: a plaintext
// client, Splice into a tunnel, the handler Splices to an upstream.
func TestSpliceThroughTunnel(t *testing.T) {
	upstreamLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstreamLn.Close()
	go func() { // upstream: reply with what it read, once the client is done
		c, err := upstreamLn.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
	}()
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		up, err := net.Dial("tcp", upstreamLn.Addr().String())
		if err != nil {
			w.Refuse(503)
			return
		}
		tun, err := w.Accept()
		if err != nil {
			up.Close()
			return
		}
		Splice(ctx, tun, up)
	}), envOpt{})
	app, a := tcpPair(t)
	tun, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	go Splice(context.Background(), a, tun)
	msg := bytes.Repeat([]byte("0123456789"), 500000)
	go func() {
		app.Write(msg)
		app.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(app)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %d of %d bytes, %v", len(got), len(msg), err)
	}
}

func TestSpliceContextCancel(t *testing.T) {
	_, a := tcpPair(t)
	b, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := Splice(ctx, a, b)
		done <- err
	}()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Splice = %v, want context.Canceled", err)
	}
}
