package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestEchoConcurrentStreams(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	ctx := testCtx(t)
	const n = 1000
	concurrently(t, n, func(i int) error { return echoOnce(ctx, e, i) })
	st := e.client.Stats()
	// 1000 concurrent streams at 100 per connection.
	if st.Dialed < 10 || st.Dialed > 20 || e.ln.n.Load() != int64(st.Dialed) {
		t.Errorf("dialed %d connections, server accepted %d; want 10..20", st.Dialed, e.ln.n.Load())
	}
}

func echoOnce(ctx context.Context, e *tcpEnv, i int) error {
	c, err := e.dial(ctx)
	if err != nil {
		return fmt.Errorf("stream %d: dial: %w", i, err)
	}
	defer c.Close()
	msg := make([]byte, 1000+i*37)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.(closeWriter).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("stream %d: read: %w", i, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("stream %d: echo mismatch (%d of %d bytes)", i, len(got), len(msg))
	}
	return nil
}

// TestLargeTransfer sends 1 GiB each way at once through one tunnel.
func TestLargeTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer")
	}
	e := newTCPEnv(t, echo, envOpt{})
	ctx := testCtx(t)
	c, err := e.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 1 << 30
	start := time.Now()
	sent := sha256.New()
	go func() {
		// A deterministic stream that is not trivially compressible.
		buf := make([]byte, 1<<20)
		rand.Read(buf)
		for i := 0; i < size/len(buf); i++ {
			buf[0] = byte(i)
			sent.Write(buf)
			if _, err := c.Write(buf); err != nil {
				t.Error(err)
				return
			}
		}
		c.(closeWriter).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.CopyBuffer(got, c, make([]byte, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("received %d bytes, want %d", n, size)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatal("SHA-256 mismatch")
	}
	t.Logf("1 GiB echoed in %v", time.Since(start))
}

func TestHalfCloseFromClient(t *testing.T) {
	reply := []byte("after your EOF")
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, _ := w.Accept()
		got, err := io.ReadAll(c) // ends at the client's END_STREAM
		if err != nil || string(got) != "request" {
			t.Errorf("server read %q, %v", got, err)
		}
		c.Write(reply)
		c.(closeWriter).CloseWrite()
	}), envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("request"))
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after CloseWrite succeeded")
	}
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, reply) {
		t.Fatalf("client read %q, %v", got, err)
	}
}

func TestHalfCloseFromServer(t *testing.T) {
	done := make(chan []byte, 1)
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, _ := w.Accept()
		c.Write([]byte("banner"))
		c.(closeWriter).CloseWrite() // the client must see EOF, and still send
		got, _ := io.ReadAll(c)
		done <- got
	}), envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "banner" {
		t.Fatalf("client read %q, %v", got, err)
	}
	// Well after the server's END_STREAM, the client's bytes still arrive.
	payload := bytes.Repeat([]byte("late data "), 100000)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(closeWriter).CloseWrite()
	if got := <-done; !bytes.Equal(got, payload) {
		t.Fatalf("server read %d bytes, want %d", len(got), len(payload))
	}
}

func TestDialContextCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		select { // never answers on its own
		case <-release:
		case <-ctx.Done():
		}
	}), envOpt{})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := e.dial(ctx)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Dial error = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial did not return after cancel")
	}
}

// TestDialCancelBlockedHandler cancels after the CONNECT reached the handler.
func TestDialCancelBlockedHandler(t *testing.T) {
	reached := make(chan struct{})
	handlerDone := make(chan error, 1)
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		close(reached)
		<-ctx.Done() // the client's RST_STREAM cancels the handler's context
		handlerDone <- ctx.Err()
	}), envOpt{})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := e.dial(ctx)
		errc <- err
	}()
	<-reached
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial error = %v, want context.Canceled", err)
	}
	if err := <-handlerDone; err == nil {
		t.Fatal("handler context not cancelled")
	}
}

func TestRefusalStatus(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
				w.Refuse(code)
			}), envOpt{})
			_, err := e.dial(testCtx(t))
			if statusOf(err) != code {
				t.Fatalf("Dial error = %v, want status %d", err, code)
			}
			// The connection survives a refusal and is reused.
			_, err = e.dial(testCtx(t))
			if statusOf(err) != code || e.ln.n.Load() != 1 {
				t.Fatalf("second Dial: %v, %d connections", err, e.ln.n.Load())
			}
		})
	}
}

func TestUnansweredIs500(t *testing.T) {
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {}), envOpt{})
	if _, err := e.dial(testCtx(t)); statusOf(err) != http.StatusInternalServerError {
		t.Fatalf("Dial error = %v, want 500", err)
	}
}

func TestRequestFields(t *testing.T) {
	reqs := make(chan *Request, 1)
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		reqs <- r
		w.Refuse(http.StatusUnauthorized)
	}), envOpt{})
	hdr := http.Header{}
	hdr.Set("Forwarded", FormatForwarded(netip.MustParseAddrPort("10.1.2.3:4567")))
	hdr.Set("Baggage", "k8s.namespace.name=ns2")
	hdr.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	auth := netip.MustParseAddrPort("[fd00::7]:9090")
	_, err := e.client.Dial(testCtx(t), e.src, e.addr, auth, []spiffeid.ID{e.srvID}, hdr)
	if statusOf(err) != http.StatusUnauthorized {
		t.Fatal(err)
	}
	r := <-reqs
	if r.Peer != e.srcID || r.Authority != auth || r.Forwarded != netip.MustParseAddrPort("10.1.2.3:4567") {
		t.Errorf("request = %+v", r)
	}
	if r.Header.Get("Baggage") != hdr.Get("Baggage") || r.Header.Get("Traceparent") != hdr.Get("Traceparent") {
		t.Errorf("headers = %v", r.Header)
	}
	if r.LocalAddr.String() != e.addr.String() {
		t.Errorf("LocalAddr = %v, want %v", r.LocalAddr, e.addr)
	}
}

func TestConnectionReuse(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	ctx := testCtx(t)
	for i := range 20 {
		if err := echoOnce(ctx, e, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.ln.n.Load(); n != 1 || e.client.Stats().Dialed != 1 {
		t.Fatalf("server accepted %d, client dialed %d; want 1", n, e.client.Stats().Dialed)
	}
	// Another expected-identity set is another pool key.
	other := []spiffeid.ID{e.srvID, spiffeid.RequireFromString("spiffe://cluster.local/ns/x/sa/y")}
	c, err := e.client.Dial(ctx, e.src, e.addr, testAuthority, other, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := e.ln.n.Load(); n != 2 {
		t.Fatalf("server accepted %d, want 2", n)
	}
}

// holdOpen dials n tunnels and keeps them open.
func holdOpen(t *testing.T, e *tcpEnv, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for range n {
		c, err := e.dial(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

func TestNewConnAtClientStreamLimit(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{clientCfg: func(c *ClientConfig) { c.MaxStreamsPerConn = 2 }})
	conns := holdOpen(t, e, 5)
	if n := e.ln.n.Load(); n != 3 {
		t.Fatalf("5 streams at 2 per conn used %d connections, want 3", n)
	}
	// A freed slot is reused rather than dialing.
	conns[0].Close()
	holdOpen(t, e, 1)
	if n := e.ln.n.Load(); n != 3 {
		t.Fatalf("after freeing a slot: %d connections, want 3", n)
	}
}

func TestNewConnAtServerStreamLimit(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) { c.MaxConcurrentStreams = 1 }})
	holdOpen(t, e, 3)
	if n := e.ln.n.Load(); n != 3 {
		t.Fatalf("3 streams at server limit 1 used %d connections, want 3", n)
	}
}

func TestIdleEviction(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{clientCfg: func(c *ClientConfig) { c.IdleTimeout = 50 * time.Millisecond }})
	ctx := testCtx(t)
	if err := echoOnce(ctx, e, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.ln.closed: // the client closed the idle connection
	case <-ctx.Done():
		t.Fatal("idle connection not closed")
	}
	if st := e.client.Stats(); st.Open != 0 {
		t.Fatalf("open connections = %d, want 0", st.Open)
	}
	if err := echoOnce(ctx, e, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.ln.n.Load(); n != 2 {
		t.Fatalf("server accepted %d, want 2", n)
	}
}

func TestGracefulShutdown(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	ctx := testCtx(t)
	c, err := e.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(ctx) }()
	if err := <-e.serveErr; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	// New dials fail ...
	fresh, _ := NewClient(ClientConfig{Bundles: e.pki.bundles})
	defer fresh.Close()
	if _, err := fresh.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil); err == nil {
		t.Fatal("Dial after Shutdown succeeded")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a stream open", err)
	default:
	}
	// ... while the open tunnel completes.
	msg := bytes.Repeat([]byte("in flight "), 10000)
	go func() {
		c.Write(msg)
		c.(closeWriter).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("in-flight echo: %d bytes, %v", len(got), err)
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

func TestShutdownDeadlineCloses(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v", err)
	}
	if _, err := io.ReadAll(c); err == nil {
		t.Fatal("tunnel survived a forced close")
	}
}

// TestDetachedTunnelOutlivesHandler: a detached tunnel stays open after
// ServeHBONE returns, served by a goroutine of the handler's; detaching
// with nothing accepted is an error.
func TestDetachedTunnelOutlivesHandler(t *testing.T) {
	returned := make(chan error, 1)
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		if err := w.Detach(); err == nil {
			t.Error("Detach before Accept succeeded")
		}
		c, err := w.Accept()
		if err == nil {
			err = w.Detach()
		}
		// Reported as the handler returns; the server's clean-up, which
		// would close an attached tunnel, follows at once.
		defer func() { returned <- err }()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
			c.(closeWriter).CloseWrite()
		}()
	}), envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-returned; err != nil {
		t.Fatalf("Detach: %v", err)
	}
	// The handler has returned; the tunnel still echoes.
	c.Write([]byte("still open"))
	c.(closeWriter).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "still open" {
		t.Fatalf("echo after the handler returned: %q, %v", got, err)
	}
}

// TestDataBeforeEndSurvivesConnClose: a stream whose peer finished
// sending keeps what it received when the connection closes before this
// side ends too: the reader gets the data and then EOF.
func TestDataBeforeEndSurvivesConnClose(t *testing.T) {
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, err := w.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("complete"))
		c.(closeWriter).CloseWrite()
		io.Copy(io.Discard, c)
	}), envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.(*h2Stream)
	wait := func(cond func() bool) {
		st.c.mu.Lock()
		for !cond() {
			st.cond.Wait()
		}
		st.c.mu.Unlock()
	}
	wait(func() bool { return st.remoteEnded })
	e.srv.Close()
	wait(func() bool { return st.reset != nil })
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "complete" {
		t.Fatalf("read %q, %v; want the data and EOF", got, err)
	}
}

// ServeConn serves a connection from the caller's own accept loop as
// Serve does; once the server is closed, it closes what it is handed.
func TestServeConn(t *testing.T) {
	ctx := testCtx(t)
	// A handed connection left waiting for its handshake would be
	// closed by nothing but the test's deadline.
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) { c.HandshakeTimeout = time.Hour }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.srv.ServeConn(c)
		}
	}()
	e.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	if err := echoOnce(ctx, e, 0); err != nil {
		t.Fatal(err)
	}

	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetReadDeadline(dl)
	}
	if _, err := raw.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read from a connection handed to a closed server: %v, want EOF", err)
	}
}

// A tunnel's read deadline can be moved as HTTP servers move theirs, on
// every request: a later deadline replaces an earlier one (whose timer
// must not fire for it), an earlier one replaces a later one, and none
// clears it.
func TestTunnelReadDeadlines(t *testing.T) {
	release := make(chan struct{})
	e := newTCPEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, _ := w.Accept()
		<-release
		c.Write([]byte("late"))
		c.(closeWriter).CloseWrite()
		io.Copy(io.Discard, c)
	}), envOpt{})
	defer close(release)
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 8)
	for _, tc := range []struct {
		name string
		set  func()
	}{
		{"already past", func() { c.SetReadDeadline(time.Now().Add(-time.Second)) }},
		{"short", func() { c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) }},
		{"a long one replaced by a short one", func() {
			c.SetReadDeadline(time.Now().Add(time.Hour))
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		}},
		// The timer set for the first fires and arms itself again for
		// the second.
		{"a short one moved later", func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		}},
		{"one cleared and set again", func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			c.SetReadDeadline(time.Time{})
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read: %v, want a deadline error", err)
			}
		})
	}
	// A short deadline replaced by a long one: the short one's timer
	// fires and is ignored, so a read can still succeed.
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	c.SetReadDeadline(time.Now().Add(time.Hour))
	c.SetReadDeadline(time.Time{})
	got := make(chan error, 1)
	go func() {
		n, err := io.ReadFull(c, buf[:4])
		if err == nil && string(buf[:n]) != "late" {
			err = fmt.Errorf("read %q", buf[:n])
		}
		got <- err
	}()
	release <- struct{}{}
	if err := <-got; err != nil {
		t.Fatalf("read after the deadlines were lifted: %v", err)
	}
}

// TestTunnelDeadlinesDoNotAllocate: HTTP servers and clients move a
// tunnel's deadlines on every request, so moving one must cost no
// allocation once its timer exists.
func TestTunnelDeadlinesDoNotAllocate(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	c, err := e.dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	far := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		set  func(time.Time) error
	}{
		{"read", c.SetReadDeadline},
		{"write", c.SetWriteDeadline},
		{"both", c.SetDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set(far) // makes the timers
			if n := testing.AllocsPerRun(100, func() {
				tc.set(far)
				tc.set(time.Time{})
			}); n != 0 {
				t.Errorf("%v allocations per deadline moved and cleared, want 0", n)
			}
		})
	}
}
