package hbone

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// gatherEnv is a server and a client that both gather writes.
func gatherEnv(t *testing.T, h Handler) *tcpEnv {
	return newTCPEnv(t, h, envOpt{
		serverCfg: func(c *ServerConfig) { c.GatherWrites = true },
		clientCfg: func(c *ClientConfig) { c.GatherWrites = true },
	})
}

// With GatherWrites, the frames of many tunnels writing at once still
// all arrive, in order per tunnel.
func TestGatherWritesEcho(t *testing.T) {
	e := gatherEnv(t, echo)
	ctx := testCtx(t)
	const n = 300
	concurrently(t, n, func(i int) error { return echoOnce(ctx, e, i) })
}

// Frames a tunnel wrote before its connection was closed leave before
// the close, though the connection's writer had not sent them yet.
func TestGatherWritesSentBeforeClose(t *testing.T) {
	got := make(chan string, 1)
	e := gatherEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, err := w.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(c)
		got <- string(b)
	}))
	ctx := testCtx(t)
	// On one thread the connection's writer goroutine cannot send before
	// the close below: the frames are still gathered when it happens,
	// and the close must wait for them to leave.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for i := range 20 {
		client, err := NewClient(ClientConfig{Bundles: e.pki.bundles, GatherWrites: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("payload")); err != nil {
			t.Fatal(err)
		}
		if err := c.(closeWriter).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		// No yield between the writes and the close.
		c.(*h2Stream).c.close()
		select {
		case s := <-got:
			if s != "payload" {
				t.Fatalf("round %d: server read %q, want %q", i, s, "payload")
			}
		case <-ctx.Done():
			t.Fatalf("round %d: server read nothing", i)
		}
		client.Close()
	}
}

// A drain with GatherWrites delivers every tunnel's answer whole: the
// connection closes once its last stream ends, and the frames that ended
// it leave first.
func TestGatherWritesDrain(t *testing.T) {
	const tunnels, size = 8, 256 << 10
	answer := make([]byte, size)
	for i := range answer {
		answer[i] = byte(i)
	}
	for round := range 10 {
		e := gatherEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
			c, err := w.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := io.ReadAll(c); err != nil {
				return
			}
			for b := answer; len(b) > 0; b = b[4096:] {
				if _, err := c.Write(b[:4096]); err != nil {
					return
				}
			}
		}))
		ctx := testCtx(t)
		conns := make([]net.Conn, tunnels)
		for i := range conns {
			c, err := e.dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		shut := make(chan error, 1)
		go func() { shut <- e.srv.Shutdown(ctx) }()
		var wg sync.WaitGroup
		errs := make(chan error, tunnels)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if err := c.(closeWriter).CloseWrite(); err != nil {
					errs <- fmt.Errorf("tunnel %d: %w", i, err)
					return
				}
				b, err := io.ReadAll(c)
				if err == nil && !bytes.Equal(b, answer) {
					err = fmt.Errorf("read %d bytes, want %d", len(b), size)
				}
				if err != nil {
					errs <- fmt.Errorf("round %d, tunnel %d: %w", round, i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := <-shut; err != nil {
			t.Fatalf("round %d: Shutdown: %v", round, err)
		}
	}
}
