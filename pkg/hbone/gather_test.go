package hbone

import (
	"context"
	"io"
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
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOnce(ctx, e, i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
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
		// No yield between the writes and the close: what they wrote is
		// still gathered when the connection closes.
		client.Close()
		select {
		case s := <-got:
			if s != "payload" {
				t.Fatalf("round %d: server read %q, want %q", i, s, "payload")
			}
		case <-ctx.Done():
			t.Fatalf("round %d: server read nothing", i)
		}
	}
}
