package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDrain: after Drain, HTTP/1 answers say "Connection: close" and an
// HTTP/2 connection gets a GOAWAY, so that clients reconnect (to another
// waypoint, once the mesh has been told) and none of their requests fail.
func TestDrain(t *testing.T) {
	for _, h := range []int{1, 2} {
		t.Run("HTTP/"+string(rune('0'+h)), func(t *testing.T) {
			m, _ := oneService(t, nil, meshOptions{}, "127.77.40.1:8080")
			var dials atomic.Int32
			firstClosed := make(chan struct{})
			dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
				c, err := m.tunnel(ctx, addr)
				if err != nil {
					return nil, err
				}
				if dials.Add(1) == 1 {
					return &closeNotifier{Conn: c, closed: firstClosed}, nil
				}
				return c, nil
			}
			tr := &http.Transport{DialContext: dial, DisableCompression: true}
			if h == 2 {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				tr.Protocols = &p
			}
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			defer tr.CloseIdleConnections()
			get := func() *http.Response {
				t.Helper()
				resp, body := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
				if resp.StatusCode != http.StatusOK || resp.ProtoMajor != h {
					t.Fatalf("answer %s %d %q", resp.Proto, resp.StatusCode, body)
				}
				return resp
			}

			if resp := get(); resp.Close {
				t.Fatal("before the drain: the answer closes the connection")
			}
			m.px.Drain()
			if h == 1 {
				// The kept connection is closed at once, or after this
				// answer: either way the request is answered (Go's client
				// sends it again when a kept connection closes under it).
				if resp := get(); !resp.Close {
					t.Error("after the drain: an HTTP/1 answer does not say Connection: close")
				}
			}
			// The first connection ends without the client closing it:
			// the GOAWAY (HTTP/2) or the answer's close (HTTP/1).
			select {
			case <-firstClosed:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection from before the drain is still open")
			}
			// A new connection, accepted while draining, serves its request.
			resp := get()
			if h == 1 && !resp.Close {
				t.Error("a new connection during the drain is kept alive")
			}
			switch n := dials.Load(); {
			case n < 2:
				t.Errorf("%d connections, want a new one after the drain", n)
			case h == 2 && n > 2:
				// A GOAWAY before the new connection's first stream was
				// answered sent the client elsewhere again.
				t.Errorf("%d connections, want 2: one made during the drain was refused its first request", n)
			}
		})
	}
}

// closeNotifier closes closed when the connection is closed.
type closeNotifier struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
