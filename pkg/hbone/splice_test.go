package hbone

import (
	"bytes"
	"context"
	"errors"
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

// spliceTunnel dials a tunnel to a server with handler h and splices it
// to a loopback TCP connection, as ztunnel's outbound side does; it
// returns the application's end and Splice's result.
func spliceTunnel(t *testing.T, h HandlerFunc, before func(tun net.Conn)) (net.Conn, <-chan error) {
	t.Helper()
	e := newTCPEnv(t, h, envOpt{})
	app, a := tcpPair(t)
	tun, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(tun)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := Splice(context.Background(), a, tun)
		done <- err
	}()
	return app, done
}

// pattern is n bytes whose order a reader can check.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

// TestSpliceSlowReader: the tunnel delivers faster than the application
// reads (small socket buffers, small reads), so the read loop's writes
// fall short and the rest is drained: every byte arrives, in order.
func TestSpliceSlowReader(t *testing.T) {
	msg := pattern(6 << 20)
	app, done := spliceTunnel(t, func(ctx context.Context, w *Responder, r *Request) {
		c, err := w.Accept()
		if err != nil {
			return
		}
		c.Write(msg)
		c.(closeWriter).CloseWrite()
		io.Copy(io.Discard, c)
	}, nil)
	app.(*net.TCPConn).SetReadBuffer(64 << 10)
	app.(*net.TCPConn).CloseWrite()
	var got []byte
	buf := make([]byte, 1500)
	for {
		n, err := app.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, want %d in order", len(got), len(msg))
	}
	if err := <-done; err != nil {
		t.Fatalf("Splice: %v", err)
	}
}

// TestSpliceDataBeforeSplice: data and END_STREAM that arrived before
// Splice started are passed on.
func TestSpliceDataBeforeSplice(t *testing.T) {
	sent := make(chan struct{})
	app, done := spliceTunnel(t, func(ctx context.Context, w *Responder, r *Request) {
		c, err := w.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("early"))
		c.(closeWriter).CloseWrite()
		close(sent)
		io.Copy(io.Discard, c)
	}, func(tun net.Conn) {
		<-sent
		// Wait for the END_STREAM to be read too.
		st := tun.(*h2Stream)
		st.c.mu.Lock()
		for !st.remoteEnded {
			st.cond.Wait()
		}
		st.c.mu.Unlock()
	})
	got, err := io.ReadAll(app)
	if err != nil || string(got) != "early" {
		t.Fatalf("read %q, %v", got, err)
	}
	app.(*net.TCPConn).CloseWrite()
	if err := <-done; err != nil {
		t.Fatalf("Splice: %v", err)
	}
}

// TestSpliceTunnelFailures: a tunnel reset by the server, or an
// application that resets its connection, ends Splice with an error and
// closes the other side; what arrived before the failure was delivered.
func TestSpliceTunnelFailures(t *testing.T) {
	t.Run("server resets", func(t *testing.T) {
		app, done := spliceTunnel(t, func(ctx context.Context, w *Responder, r *Request) {
			c, err := w.Accept()
			if err != nil {
				return
			}
			// Once the client's byte came through, its Splice runs.
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				return
			}
			c.Write([]byte("partial"))
			c.Close() // the client has not ended: RST_STREAM
		}, nil)
		app.Write([]byte("x"))
		got, _ := io.ReadAll(app)
		if string(got) != "partial" {
			t.Fatalf("read %q before the reset", got)
		}
		var sr streamResetError
		if err := <-done; !errors.As(err, &sr) || !sr.remote {
			t.Fatalf("Splice: %v; want a reset by the peer", err)
		}
	})
	t.Run("application resets", func(t *testing.T) {
		serverErr := make(chan error, 1)
		app, done := spliceTunnel(t, func(ctx context.Context, w *Responder, r *Request) {
			c, err := w.Accept()
			if err != nil {
				return
			}
			// Write until the client's side gives up on the tunnel.
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					serverErr <- err
					return
				}
			}
		}, nil)
		if _, err := io.ReadFull(app, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		app.(*net.TCPConn).SetLinger(0)
		app.Close()
		if err := <-done; err == nil {
			t.Fatal("Splice returned no error after the application reset")
		}
		if err := <-serverErr; err == nil {
			t.Fatal("the server's writes went on")
		}
	})
}
