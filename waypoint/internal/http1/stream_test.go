package http1

import (
	"io"
	"net/http"
	"runtime"
	"testing"
)

// pattern is an endless, allocation-free source of body bytes.
type pattern struct{ n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.n + int64(i))
	}
	p.n += int64(len(b))
	return len(b), nil
}

// checkPattern counts bytes and checks that they are pattern's.
type checkPattern struct {
	n   int64
	bad bool
}

func (c *checkPattern) Write(b []byte) (int, error) {
	for i, x := range b {
		if x != byte(c.n+int64(i)) {
			c.bad = true
		}
	}
	c.n += int64(len(b))
	return len(b), nil
}

// TestStreamLargeBody sends 1 GiB from a ClientConn through Serve, whose
// handler echoes it, and back: the codec's allocations must not grow
// with the body.
func TestStreamLargeBody(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	c, s := tcpPair(t)
	serveOn(t, c, s, ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(w, r.Body); err != nil {
			t.Errorf("handler copy: %v", err)
		}
	})})
	cc := NewClientConn(c, ClientConfig{})
	defer cc.Close()

	// Warm up buffers and pools, then measure.
	roundTrip := func(n int64) (*checkPattern, error) {
		req := newRequest(t, "POST", "http://h/echo", io.LimitReader(&pattern{}, n))
		req.ContentLength = n
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var got checkPattern
		_, err = io.Copy(&got, resp.Body)
		return &got, err
	}
	if _, err := roundTrip(1 << 20); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, err := roundTrip(size)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got.n != size || got.bad {
		t.Fatalf("echoed %d bytes (corrupt: %v), want %d", got.n, got.bad, size)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("streamed %d bytes with %d bytes allocated", size, alloc)
	if alloc > 4<<20 {
		t.Errorf("allocated %d bytes to stream %d", alloc, size)
	}
	if !cc.Reusable() {
		t.Error("connection not reusable after the stream")
	}
}
