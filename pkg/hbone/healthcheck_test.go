package hbone

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A server that stops sending anything (it vanished: its answers to PING
// never come) fails the client's connection and its tunnels with
// ErrPeerSilent, after a PING.
func TestHealthCheckFailsSilentServer(t *testing.T) {
	ctx := testCtx(t)
	// The server is silent only once it has answered the CONNECT; a
	// loaded machine must not make it look silent before that.
	s := newStallServer(t, func(c *ClientConfig) {
		c.PingInterval, c.PingTimeout = 50*time.Millisecond, 500*time.Millisecond
	})
	res := s.dial(ctx, nil)
	p := s.accept(ctx)
	var pinged atomic.Bool
	served := make(chan struct{})
	go func() {
		defer close(served)
		p.readUntilHeader(func(fh http2.FrameHeader) bool {
			if fh.Type == http2.FramePing && !fh.Flags.Has(http2.FlagPingAck) {
				pinged.Store(true)
			}
			return false
		}, p.answerConnects) // answers the CONNECT, then nothing, until the client closes
	}()
	r := awaitDial(t, ctx, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	_, err := io.ReadAll(r.c)
	if !errors.Is(err, ErrPeerSilent) {
		t.Fatalf("tunnel read: %v; want ErrPeerSilent", err)
	}
	<-served
	if !pinged.Load() {
		t.Error("the connection failed without sending a PING")
	}
}

// A client that stops sending anything fails its connection on the
// server, after a PING: the tunnels it held end.
func TestHealthCheckFailsSilentClient(t *testing.T) {
	ctx := testCtx(t)
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) {
		c.PingInterval, c.PingTimeout = 20*time.Millisecond, 100*time.Millisecond
	}})
	p := dialRawPeer(t, e) // sends its preface and SETTINGS, then nothing
	pinged := false
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			break // the server closed the connection
		}
		if pf, ok := f.(*http2.PingFrame); ok && !pf.IsAck() {
			pinged = true
		}
	}
	if !pinged {
		t.Error("the server closed the connection without sending a PING")
	}
	e.awaitConnClosed(t, ctx)
}

// A live peer answers the PINGs: an idle connection outlives many ping
// intervals on both sides, and carries the next tunnel.
func TestHealthCheckKeepsLivePeer(t *testing.T) {
	ctx := testCtx(t)
	// The intervals are short and the timeouts long: a loaded machine
	// answers a PING within a second.
	e := newTCPEnv(t, echo, envOpt{
		serverCfg: func(c *ServerConfig) { c.PingInterval, c.PingTimeout = 5*time.Millisecond, 2*time.Second },
		clientCfg: func(c *ClientConfig) { c.PingInterval, c.PingTimeout = 5*time.Millisecond, 2*time.Second },
	})
	for i := range 2 {
		c, err := e.dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		c.Close()
		// Time passing is what is tested: 40 intervals without a frame
		// of the tunnels' own.
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.client.Stats().Dialed; n != 1 {
		t.Errorf("%d connections dialed; want 1, kept alive by its PINGs", n)
	}
}

// An endpoint's HTTP/2 server that hangs (H2CClientConn, the waypoint's
// connections to endpoints) fails a request waiting on it with
// ErrPeerSilent once a PING goes unanswered.
func TestHealthCheckH2CClient(t *testing.T) {
	cli, srv := tcpPair(t)
	cc, err := NewH2CClientConn(cli, H2CClientConfig{PingInterval: 20 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var pinged atomic.Bool
	served := make(chan struct{})
	go func() {
		defer close(served)
		fr := http2.NewFramer(srv, srv)
		if err := readClientPreface(srv); err != nil {
			return
		}
		fr.WriteSettings() // then nothing: no response, no PING answer
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if pf, ok := f.(*http2.PingFrame); ok && !pf.IsAck() {
				pinged.Store(true)
			}
		}
	}()
	req, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://x/", nil)
	if _, err := cc.RoundTrip(req); !errors.Is(err, ErrPeerSilent) {
		t.Fatalf("round trip: %v; want ErrPeerSilent", err)
	}
	<-served // it reads until the client closes
	if !pinged.Load() {
		t.Error("the connection failed without sending a PING")
	}
}

func TestPingFlags(t *testing.T) {
	tests := []struct {
		name                  string
		interval, timeout     time.Duration
		wantInterval, wantTTL time.Duration
		wantErr               string
	}{
		{"defaults", DefaultPingInterval, DefaultPingTimeout, DefaultPingInterval, DefaultPingTimeout, ""},
		{"set", time.Minute, 20 * time.Second, time.Minute, 20 * time.Second, ""},
		{"0 turns them off", 0, DefaultPingTimeout, -1, -1, ""},
		{"off whatever the timeout", 0, -time.Second, -1, -1, ""},
		{"negative interval", -time.Second, time.Second, 0, 0, "want a positive duration, or 0"},
		{"no timeout", time.Second, 0, 0, 0, "ping timeout 0s: want a positive duration"},
		{"negative timeout", time.Second, -time.Second, 0, 0, "ping timeout -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			interval, timeout, err := PingFlags(tt.interval, tt.timeout)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if interval != tt.wantInterval || timeout != tt.wantTTL {
				t.Fatalf("PingFlags = %v, %v; want %v, %v", interval, timeout, tt.wantInterval, tt.wantTTL)
			}
			// What a config does with them: off is off.
			gi, gt := pingDefaults(interval, timeout)
			if off := tt.interval == 0; off != (gi == 0 && gt == 0) {
				t.Fatalf("pingDefaults(%v, %v) = %v, %v; off %v", interval, timeout, gi, gt, off)
			}
		})
	}
}
