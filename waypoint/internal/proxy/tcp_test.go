package proxy

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// tcpEndpoint is a backend that speaks raw TCP, behind a destination
// ztunnel.
type tcpEndpoint struct {
	accepted atomic.Int64
}

// startTCPEndpoint serves each connection to addr with serve.
func (m *testMesh) startTCPEndpoint(name, addr, sa string, serve func(net.Conn)) *tcpEndpoint {
	m.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { ln.Close() })
	e := &tcpEndpoint{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	m.startZtunnel(name, netip.MustParseAddrPort(addr).Addr(), sa, nil)
	return e
}

// reverseAfterEOF reads everything the client sends, then answers it
// reversed and closes: it needs the client's half-close to answer.
func reverseAfterEOF(c net.Conn) {
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	c.Write(b)
}

// serverFirst greets, then answers each line with its length until QUIT.
func serverFirst(c net.Conn) {
	io.WriteString(c, "220 ready\r\n")
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	io.WriteString(c, "221 bye "+string(buf[:n]))
}

// tcpMesh is one service, db, on port 5432 with appProtocol (and a port
// name that says nothing), backed by one endpoint at addr:9000.
func tcpMesh(t *testing.T, appProtocol, addr string, o meshOptions, policies ...*waypointapi.L7Authorization) *testMesh {
	const vip = "10.96.4.10"
	st := meshstate.Config{Services: []*meshstate.Service{service("db", vip, 5432, 9000)}, Workloads: []*meshstate.Workload{
		workload("db-0", addr, "db", hostname("db"), 5432),
	}}
	svc := wpService("db", vip, 5432, 9000, appProtocol)
	svc.Ports[0].Name = "db"
	svc.Policies = policies
	return newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}}, st, o)
}

// binary is bytes no HTTP parser would take, large enough to need many
// reads.
func binary(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	b[0] = 0
	return b
}

// TCP passes through byte for byte both ways, with half-close: the
// backend answers only after the client's end of stream, for a port
// declared tcp and for one whose protocol is detected from non-HTTP
// bytes.
func TestTCPPassthrough(t *testing.T) {
	for i, tc := range []struct {
		name, appProtocol string
		first             []byte
	}{
		{"appProtocol tcp", "tcp", binary(300 << 10)},
		{"appProtocol tcp, text that looks like HTTP", "tcp", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"detected: binary", "", binary(300 << 10)},
		{"detected: lower-case text", "", []byte("hello, world\n")},
		{"detected: a long token", "", []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ and more")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := "127.77.30." + string(rune('1'+i)) + ":9000"
			m := tcpMesh(t, tc.appProtocol, addr, meshOptions{})
			be := m.startTCPEndpoint("db-0", addr, "db", reverseAfterEOF)
			c, err := m.tunnel(t.Context(), "10.96.4.10:5432")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() {
				c.Write(tc.first)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading: %v (after %d bytes)", err, len(got))
			}
			want := bytes.Clone(tc.first)
			for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
				want[i], want[j] = want[j], want[i]
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes back, want the %d sent, reversed", len(got), len(want))
			}
			if be.accepted.Load() != 1 {
				t.Errorf("backend accepted %d connections", be.accepted.Load())
			}
		})
	}
}

// A server-first protocol (the client waits for the server's greeting)
// works on a port without a declared protocol: after the detection
// timeout the waypoint passes the connection through.
func TestTCPServerFirst(t *testing.T) {
	m := tcpMesh(t, "", "127.77.30.10:9000", meshOptions{proxy: func(c *Config) { c.DetectTimeout = 50 * time.Millisecond }})
	m.startTCPEndpoint("db-0", "127.77.30.10:9000", "db", serverFirst)
	c, err := m.tunnel(t.Context(), "10.96.4.10:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	greeting := make([]byte, len("220 ready\r\n"))
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "220 ready\r\n" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	io.WriteString(c, "QUIT\r\n")
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "221 bye QUIT\r\n" {
		t.Errorf("answer %q, %v", rest, err)
	}
}

// An L4 DENY of the client's principal refuses its connections to a TCP
// port: the client reads nothing, and the backend is never connected to.
func TestTCPDenyByPrincipal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		action securityapi.Action
		deny   bool
	}{
		{"DENY the client", securityapi.Action_DENY, true},
		{"ALLOW the client", securityapi.Action_ALLOW, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := "127.77.30.20:9000"
			if !tc.deny {
				addr = "127.77.30.21:9000"
			}
			// The sleep client's principal, as newMesh issues it.
			pol := l7Policy("sleep-policy", tc.action, &waypointapi.L7Match{L4: &securityapi.Match{
				Principals: []*securityapi.StringMatch{exact(testTD + "/ns/" + testNS + "/sa/sleep")},
			}})
			m := tcpMesh(t, "tcp", addr, meshOptions{}, pol)
			be := m.startTCPEndpoint("db-0", addr, "db", reverseAfterEOF)
			c, err := m.tunnel(t.Context(), "10.96.4.10:5432")
			if err != nil {
				t.Fatal(err) // the tunnel opens; the policy closes it
			}
			defer c.Close()
			go func() {
				c.Write([]byte("data"))
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, _ := io.ReadAll(c)
			if tc.deny {
				if len(got) != 0 || be.accepted.Load() != 0 {
					t.Errorf("denied, yet the client read %q and the backend accepted %d connections", got, be.accepted.Load())
				}
				return
			}
			if string(got) != "atad" {
				t.Errorf("allowed, the client read %q", got)
			}
		})
	}
}
