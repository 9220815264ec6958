package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Peer plays HTTP/2 by hand over a tunnel to the waypoint, to send what
// no well-behaved client sends.
type h2Peer struct {
	t  *testing.T
	fr *http2.Framer
	c  io.ReadWriteCloser
}

func (m *testMesh) h2Peer(t *testing.T) *h2Peer {
	t.Helper()
	c, err := m.tunnel(t.Context(), echoVIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2Peer{t: t, fr: fr, c: c}
}

// headerBlock encodes a GET's fields.
func headerBlock(path string, extra ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return buf.Bytes()
}

// goAway reads frames until a GOAWAY (returned) or the connection's end
// (nil); the tunnel must end either way.
func (p *h2Peer) goAway() *http2.GoAwayFrame {
	p.t.Helper()
	done := make(chan *http2.GoAwayFrame, 1)
	go func() {
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				done <- nil
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				done <- ga
				return
			}
		}
	}()
	select {
	case ga := <-done:
		return ga
	case <-time.After(30 * time.Second):
		p.t.Fatal("the waypoint neither sent GOAWAY nor closed the connection")
		return nil
	}
}

// HTTP/2 rapid reset (CVE-2023-44487): a client opening streams and
// resetting them at once must not make the waypoint start unbounded work.
// net/http's server, which the waypoint uses, runs at most
// MaxConcurrentStreams handlers at a time (reset streams' included) and
// ends a connection whose queue of waiting ones grows too long; a reset
// cancels the waypoint's request to the backend. So the backend never has
// more than about that many of the flood's requests at once.
func TestHTTP2RapidResetIsBounded(t *testing.T) {
	m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, "http2"), meshOptions{}, "127.77.41.1:8080")
	var inflight, peak atomic.Int64
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-r.Context().Done() // until the waypoint gives the request up
	})
	p := m.h2Peer(t)
	hb := headerBlock("/reset")
	const streams = 5000
	go func() {
		for i := uint32(1); i < 2*streams; i += 2 {
			if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: hb, EndStream: true, EndHeaders: true}); err != nil {
				return
			}
			if err := p.fr.WriteRSTStream(i, http2.ErrCodeCancel); err != nil {
				return
			}
		}
		// The PING's ack comes after every frame before it was read.
		p.fr.WritePing(false, [8]byte{1})
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return // the waypoint ended the connection
			}
			if ping, ok := f.(*http2.PingFrame); ok && ping.IsAck() {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the waypoint neither answered the PING nor ended the connection")
	}
	if got := peak.Load(); got > 300 {
		t.Errorf("the backend had %d of the flood's requests at once, want about MaxConcurrentStreams (250) at most", got)
	}
	t.Logf("%d streams opened and reset; the backend saw %d requests, at most %d at once", streams, eps[0].hits.Load(), peak.Load())
}

// A CONTINUATION flood (CVE-2024-27316 and kin): header fragments without
// end must not be buffered without limit; the connection ends.
func TestHTTP2ContinuationFloodIsRefused(t *testing.T) {
	m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, "http2"), meshOptions{}, "127.77.42.1:8080")
	p := m.h2Peer(t)
	hb := headerBlock("/flood")
	filler := headerBlock("/", "x-filler", strings.Repeat("a", 8000))
	go func() {
		if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb, EndStream: true}); err != nil {
			return
		}
		for range 10000 {
			if err := p.fr.WriteContinuation(1, false, filler); err != nil {
				return
			}
		}
	}()
	p.goAway()
	if n := eps[0].hits.Load(); n != 0 {
		t.Errorf("the flooded request reached the backend %d times", n)
	}
}
