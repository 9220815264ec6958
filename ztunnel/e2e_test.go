package main_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

// baseConfig describes the world of twoNodes.
const baseConfig = `
workloads:
- {name: a, namespace: default, serviceAccount: sa-a, addresses: [10.1.1.2], node: n1}
- name: c
  namespace: default
  serviceAccount: sa-c
  addresses: [10.1.2.2]
  node: n1
  services: {default/echo.default.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]}
- name: b
  namespace: default
  serviceAccount: sa-b
  addresses: [10.2.1.2]
  node: n2
  services: {default/echo.default.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]}
- {name: legacy, namespace: default, addresses: [10.2.2.2], node: n2, protocol: NONE}
- {name: wp, namespace: default, serviceAccount: waypoint, addresses: [10.2.3.2], node: n2}
services:
- name: echo
  namespace: default
  addresses: [10.96.0.10]
  ports: [{servicePort: 80, targetPort: 8080}]
- name: routed
  namespace: default
  addresses: [10.96.0.20]
  ports: [{servicePort: 80, targetPort: 8080}]
  waypoint: {address: 10.2.3.2}
`

// world is two nodes, each with a ztunnel in in-pod mode: pods a and c on
// n1, b on n2 (all in the mesh), legacy on n2 (outside the mesh) and a
// waypoint wp on n2. Every pod serves the echo application on 8080.
type world struct {
	m               *mesh
	n1, n2          *node
	a, b, c, legacy *pod
	wp              *pod
}

func twoNodes(t testing.TB, policies string, flags ...string) *world {
	m := newMesh(t)
	m.writeConfig(baseConfig + policies)
	w := &world{m: m, n1: m.newNode("n1"), n2: m.newNode("n2")}
	link(t, w.n1, w.n2, "10.10.0.1", "10.10.0.2")
	w.a = w.n1.addPod("a", "10.1.1.2", "sa-a", true)
	w.c = w.n1.addPod("c", "10.1.2.2", "sa-c", true)
	w.b = w.n2.addPod("b", "10.2.1.2", "sa-b", true)
	w.legacy = w.n2.addPod("legacy", "10.2.2.2", "", false)
	w.wp = w.n2.addPod("wp", "10.2.3.2", "waypoint", false)
	for _, p := range []*pod{w.a, w.b, w.c, w.legacy} {
		p.serveEcho(t, 8080)
	}
	w.n1.startZtunnel(defaultPorts, flags...)
	w.n2.startZtunnel(defaultPorts, flags...)
	return w
}

func TestPodToPodOverHBONE(t *testing.T) {
	w := twoNodes(t, "")
	tests := []struct {
		name, from, to, want string
	}{
		{"across nodes", "a", "10.2.1.2:8080", "b 10.1.1.2"},
		{"same node", "a", "10.1.2.2:8080", "c 10.1.1.2"},
		{"reverse", "b", "10.1.1.2:8080", "a 10.2.1.2"},
		{"to a pod outside the mesh", "a", "10.2.2.2:8080", "legacy 10.1.1.2"},
	}
	pods := map[string]*pod{"a": w.a, "b": w.b, "c": w.c}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pods[tt.from].greet(t, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			// The application sees the client pod's own address.
			if got != tt.want {
				t.Fatalf("greeting %q, want %q", got, tt.want)
			}
		})
	}
	// The admin endpoint lists the pods' certificates with their expiry.
	_, dump, err := w.n1.z.get(w.n1.z.ports.admin, "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"identity": "spiffe://cluster.local/ns/default/sa/sa-a"`, `"state": "available"`, `"expirationTime": "`, `"name": "a"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("config_dump lacks %s", want)
		}
	}
	// One access log line per connection, with both identities.
	w.n2.z.waitLog(t, `direction=inbound src.addr=10.1.1.2:`, `src.identity=spiffe://cluster.local/ns/default/sa/sa-a dst.addr=10.2.1.2:8080 dst.service=echo.default.svc.cluster.local dst.workload=b dst.namespace=default dst.identity=spiffe://cluster.local/ns/default/sa/sa-b`)
	w.n1.z.waitLog(t, `direction=outbound src.addr=10.1.1.2:`, `dst.addr=10.2.2.2:8080 dst.workload=legacy dst.namespace=default route=passthrough`)
}

func TestServiceVIPSpreadsOverEndpoints(t *testing.T) {
	w := twoNodes(t, "")
	seen := map[string]int{}
	for range 40 {
		got, err := w.a.greet(t, "10.96.0.10:80")
		if err != nil {
			t.Fatal(err)
		}
		pod, _, _ := strings.Cut(got, " ")
		seen[pod]++
	}
	if seen["b"] == 0 || seen["c"] == 0 || len(seen) != 2 {
		t.Fatalf("connections to the VIP landed on %v; want both endpoints b and c", seen)
	}
}

func TestWaypointGetsTheVIPAsAuthority(t *testing.T) {
	w := twoNodes(t, "")
	wp := w.m.serveWaypoint(t, w.wp, "waypoint")
	got, err := w.a.greetLine(t, "10.96.0.20:80")
	if err != nil {
		t.Fatal(err)
	}
	if got != "waypoint 10.96.0.20:80" {
		t.Fatalf("greeting %q: the connection did not reach the waypoint with the VIP as authority", got)
	}
	if tun := wp.tunnels(); len(tun) != 1 || tun[0] != "spiffe://cluster.local/ns/default/sa/sa-a 10.96.0.20:80" {
		t.Fatalf("waypoint saw %q; want one tunnel from a's identity to the VIP", tun)
	}
}

func TestPlaintextFromOutsideTheMesh(t *testing.T) {
	w := twoNodes(t, "")
	// legacy is not redirected: it reaches b's inbound plaintext port.
	got, err := w.legacy.greet(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	if got != "b 10.2.2.2" {
		t.Fatalf("greeting %q, want b seeing legacy's address", got)
	}
	w.n2.z.waitLog(t, "direction=inbound src.addr=10.2.2.2:", "dst.workload=b")
}

func TestSOCKS5InPod(t *testing.T) {
	w := twoNodes(t, "", "--socks5-port", "15080")
	c, err := w.a.dial(t, "127.0.0.1:15080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Greeting (no auth), then CONNECT 10.2.1.2:8080.
	if _, err := c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 10, 2, 1, 2, 0x1f, 0x90}); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 12)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	if resp[0] != 5 || resp[1] != 0 || resp[3] != 0 {
		t.Fatalf("SOCKS5 answers %x, want success", resp)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "b 10.1.1.2\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
}

const denyAtoB = `
policies:
- name: deny-a
  namespace: default
  scope: WorkloadSelector
  action: Deny
  groups:
  - rules:
    - matches:
      - principals: [cluster.local/ns/default/sa/sa-a]
`

// withPolicyOnB lists deny-a among b's policies.
func withPolicyOnB(cfg string) string {
	return strings.Replace(cfg, "  addresses: [10.2.1.2]\n", "  addresses: [10.2.1.2]\n  authorizationPolicies: [default/deny-a]\n", 1)
}

func TestDenyPolicyRefusesConnections(t *testing.T) {
	w := twoNodes(t, "")
	w.m.writeConfig(withPolicyOnB(baseConfig) + denyAtoB)
	w.n2.z.waitConfig(t, `"key": "default/deny-a"`)
	if got, err := w.a.greet(t, "10.2.1.2:8080"); err == nil {
		t.Fatalf("a reached b (%q) despite the DENY policy", got)
	}
	// c is not named by the policy.
	if got, err := w.c.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.2.2" {
		t.Fatalf("c → b: %q, %v", got, err)
	}
	w.n2.z.waitLog(t, "connection failed", "src.identity=spiffe://cluster.local/ns/default/sa/sa-a", "denied by authorization policy default/deny-a")
	w.n1.z.waitLog(t, "connection failed", "dst.workload=b", "401")
}

func TestPolicyAddedClosesOpenConnection(t *testing.T) {
	w := twoNodes(t, "")
	c, err := w.a.dial(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "b 10.1.1.2\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	w.m.writeConfig(withPolicyOnB(baseConfig) + denyAtoB)
	// The open connection is closed: the read ends without data.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := r.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the policy change: %d bytes, %v; want the connection closed", n, err)
	}
	w.n2.z.waitLog(t, "no longer allowed by authorization policy")
}

// TestMutualTLSOnTheWire captures the link between the nodes: the payload
// never crosses it in clear, and the metrics carry both identities.
func TestMutualTLSOnTheWire(t *testing.T) {
	w := twoNodes(t, "")
	capture := filepath.Join(t.TempDir(), "wire.pcap")
	tcpdump := startCapture(t, w.n1.ns.Name, "to-n2", capture)
	// Enough payload that the capture must hold many data packets.
	secret := strings.Repeat("the-payload-must-not-be-visible.", 2048) + "\n"
	c, err := w.a.dial(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	go io.WriteString(c, secret)
	if echo, err := r.ReadString('\n'); err != nil || echo != secret {
		t.Fatalf("echo of %d bytes: got %d, %v", len(secret), len(echo), err)
	}
	c.Close()
	// Both directions carried the payload: wait until the capture holds
	// at least that much, then stop it.
	pcap := tcpdump(2 * len(secret))
	if !bytes.Contains(pcap, []byte{0x3a, 0xa0}) { // port 15008 in a TCP header
		out, _ := exec.Command("tcpdump", "-nn", "-r", capture).CombinedOutput()
		t.Fatalf("capture (%d bytes) has no traffic to port 15008:\n%.3000s", len(pcap), out)
	}
	if bytes.Contains(pcap, []byte("the-payload-must-not-be-visible")) {
		t.Fatal("the payload crossed the wire in clear text")
	}

	w.n2.z.waitLog(t, "direction=inbound src.addr=10.1.1.2:", "dst.workload=b")
	_, metrics, err := w.n2.z.get(w.n2.z.ports.metrics, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`istio_tcp_connections_opened_total{`,
		`istio_tcp_connections_closed_total{`,
		`istio_tcp_received_bytes_total{`,
		`istio_tcp_sent_bytes_total{`,
		`connection_security_policy="mutual_tls"`,
		`source_principal="spiffe://cluster.local/ns/default/sa/sa-a"`,
		`destination_principal="spiffe://cluster.local/ns/default/sa/sa-b"`,
		`reporter="destination"`,
		`source_workload="a"`,
		`destination_workload="b"`,
		// Dialled by address, but b serves 8080 for echo: the service is
		// guessed, as Istio's ztunnel does, and never the address.
		`destination_service="echo.default.svc.cluster.local"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("n2 metrics lack %s", want)
		}
	}
}

// startCapture runs tcpdump on dev inside the named namespace. The
// returned function waits until the capture file holds at least min bytes,
// stops tcpdump and returns the capture.
func startCapture(t *testing.T, ns, dev, file string) func(min int) []byte {
	t.Helper()
	return startCaptureFilter(t, ns, dev, file, "tcp")
}

// startCaptureFilter is startCapture with a tcpdump filter.
func startCaptureFilter(t *testing.T, ns, dev, file, filter string) func(min int) []byte {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (apt-get install tcpdump)")
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-i", dev, "-U", "-s", "0", "-w", file, filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on ..." once it captures.
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "listening on") {
	}
	go io.Copy(io.Discard, stderr)
	stopped := false
	stop := func(min int) []byte {
		ctx := bounded(t)
		for !stopped {
			if fi, err := os.Stat(file); err == nil && fi.Size() >= int64(min) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("capture never reached %d bytes", min)
			case <-time.After(20 * time.Millisecond):
			}
		}
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Cleanup(func() { stop(0) })
	return stop
}

// TestRestartLosesNoConnection replaces a node's ztunnel while a client
// keeps connecting through it: the new ztunnel binds the same ports with
// SO_REUSEPORT, the old one drains, and no connection attempt fails.
func TestRestartLosesNoConnection(t *testing.T) {
	for _, restart := range []string{"source node", "destination node"} {
		t.Run(restart, func(t *testing.T) {
			w := twoNodes(t, "")
			n := w.n1
			if restart == "destination node" {
				n = w.n2
			}
			old := n.z
			// Several clients connect back to back throughout the restart.
			const clients = 4
			stop := make(chan struct{})
			type result struct {
				ok, failed int
				errs       []string
			}
			done := make(chan result, clients)
			for range clients {
				go func() {
					var r result
					for {
						select {
						case <-stop:
							done <- r
							return
						default:
						}
						if got, err := w.a.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.1.2" {
							r.failed++
							if len(r.errs) < 5 {
								r.errs = append(r.errs, fmt.Sprintf("%q %v", got, err))
							}
						} else {
							r.ok++
						}
					}
				}()
			}
			// The replacement gets the pods from the node agent and opens
			// its listeners beside the old ones.
			n.startZtunnel(ports{16000, 16020, 16021})
			if err := old.stop(); err != nil {
				t.Errorf("old ztunnel: %v", err)
			}
			// Keep going through the new one alone for a while.
			n.z.waitLog(t, "direction=", "connection complete")
			before := strings.Count(n.z.logs.String(), "connection complete")
			ctx := bounded(t)
			for strings.Count(n.z.logs.String(), "connection complete") < before+20 {
				select {
				case <-ctx.Done():
					t.Fatal("no traffic through the new ztunnel")
				case <-time.After(10 * time.Millisecond):
				}
			}
			close(stop)
			var r result
			for range clients {
				c := <-done
				r.ok, r.failed, r.errs = r.ok+c.ok, r.failed+c.failed, append(r.errs, c.errs...)
			}
			if r.failed > 0 || r.ok == 0 {
				t.Fatalf("%d connections succeeded, %d failed: %v", r.ok, r.failed, r.errs)
			}
			if strings.Count(old.logs.String(), "connection complete") == 0 {
				t.Fatal("the old ztunnel served no connection: the test did not overlap the restart")
			}
			t.Logf("%d connections, none failed", r.ok)
		})
	}
}

// TestDrainOnSIGTERM: after SIGTERM, ztunnel reports not ready, keeps
// serving open connections until the drain deadline, then closes them and
// exits.
func TestDrainOnSIGTERM(t *testing.T) {
	m := newMesh(t)
	m.writeConfig(baseConfig)
	n1, n2 := m.newNode("n1"), m.newNode("n2")
	link(t, n1, n2, "10.10.0.1", "10.10.0.2")
	a := n1.addPod("a", "10.1.1.2", "sa-a", true)
	b := n2.addPod("b", "10.2.1.2", "sa-b", true)
	b.serveEcho(t, 8080)
	n1.startZtunnel(defaultPorts)
	z := n2.startZtunnel(defaultPorts, "--drain-timeout", "2s")

	c, err := a.dial(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	z.cmd.Process.Signal(syscall.SIGTERM)
	z.waitLog(t, "msg=draining", "open=1")
	if code, body, err := z.get(z.ports.readiness, "/healthz/ready"); err != nil || code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("readiness while draining: %d %q %v", code, body, err)
	}
	// The open connection still works while draining.
	if _, err := io.WriteString(c, "still there\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "still there\n" {
		t.Fatalf("echo during drain: %q, %v", echo, err)
	}
	// At the deadline it is closed and ztunnel exits.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the drain deadline: %d, %v", n, err)
	}
	// It exits by itself; a second SIGTERM (z.stop) could meet the
	// default handler restored on the way out.
	select {
	case <-z.done:
	case <-bounded(t).Done():
		t.Fatal("ztunnel did not exit after the drain deadline")
	}
	if z.waitErr != nil {
		t.Fatalf("ztunnel exit: %v", z.waitErr)
	}
	z.waitLog(t, "drain deadline reached")
}

// TestSharedMode runs ztunnel with its listeners in the node's own
// namespace, the workloads being addresses of the nodes: a client uses
// SOCKS5, and the destination node's ztunnel takes HBONE for its workload.
func TestSharedMode(t *testing.T) {
	m := newMesh(t)
	m.writeConfig(`
workloads:
- {name: a, namespace: default, serviceAccount: sa-a, addresses: [10.1.1.2], node: n1}
- {name: b, namespace: default, serviceAccount: sa-b, addresses: [10.2.1.2], node: n2}
`)
	n1, n2 := m.newNode("n1"), m.newNode("n2")
	link(t, n1, n2, "10.10.0.1", "10.10.0.2")
	inpodtest.AddAddr(t, n1.ns, "lo", netip.MustParsePrefix("10.1.1.2/32"))
	inpodtest.AddAddr(t, n2.ns, "lo", netip.MustParsePrefix("10.2.1.2/32"))
	app := &pod{name: "b", ns: n2.ns}
	app.serveEchoOn(t, "10.2.1.2:8080")
	shared := []string{"--mode", "shared", "--socks5-addr", "127.0.0.1:15080"}
	n1.startZtunnel(defaultPorts, shared...)
	n2.startZtunnel(defaultPorts, shared...)

	ctx := bounded(t)
	c, err := inpodtest.Dial(ctx, n1.ns.File, "127.0.0.1:15080", netip.MustParseAddrPort("10.1.1.2:0"), inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 10, 2, 1, 2, 0x1f, 0x90}); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 12) // method selection, then the reply
	if _, err := io.ReadFull(c, resp); err != nil || resp[3] != 0 {
		t.Fatalf("SOCKS5 reply %x, %v", resp, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "b ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	c.Close() // the access log line comes at the end
	n2.z.waitLog(t, "direction=inbound", "src.identity=spiffe://cluster.local/ns/default/sa/sa-a", "dst.identity=spiffe://cluster.local/ns/default/sa/sa-b")

	// A client that is not a workload of this node gets no tunnel.
	c2, err := inpodtest.Dial(ctx, n1.ns.File, "127.0.0.1:15080", netip.AddrPort{}, inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	c2.Write([]byte{5, 1, 0, 5, 1, 0, 1, 10, 2, 1, 2, 0x1f, 0x90})
	if _, err := io.ReadFull(c2, resp); err != nil || resp[3] != 2 {
		t.Fatalf("SOCKS5 reply for an unknown source %x, %v; want 2 (not allowed)", resp, err)
	}
}

// TestHBONEOverQUIC: with the default transport (auto), a peer that
// advertises QUIC (n2's ztunnel) gets the first tunnel over TCP, which
// carries the advertisement, and every later one over UDP 15008 (still
// mutual TLS, no plaintext on the wire); a TCP-only peer (the waypoint
// stand-in, which advertises nothing, as Istio's ztunnel) keeps getting
// TCP. Access logs and metrics say which carried each connection.
func TestHBONEOverQUIC(t *testing.T) {
	w := twoNodes(t, "")
	w.m.serveWaypoint(t, w.wp, "waypoint")
	const rounds = 4
	for i := range rounds {
		if got, err := w.a.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.1.2" {
			t.Fatalf("connection %d to b: %q, %v", i+1, got, err)
		}
		if got, err := w.a.greetLine(t, "10.96.0.20:80"); err != nil || got != "waypoint 10.96.0.20:80" {
			t.Fatalf("connection %d to the waypoint: %q, %v", i+1, got, err)
		}
	}
	capture := filepath.Join(t.TempDir(), "wire.pcap")
	tcpdump := startCaptureFilter(t, w.n1.ns.Name, "to-n2", capture, "udp port 15008")
	secret := strings.Repeat("quic-payload-must-not-be-visible.", 512) + "\n"
	c, err := w.a.dial(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "b 10.1.1.2\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	go io.WriteString(c, secret)
	if echo, err := r.ReadString('\n'); err != nil || echo != secret {
		t.Fatalf("echo: %d bytes, %v", len(echo), err)
	}
	c.Close()
	pcap := tcpdump(2 * len(secret))
	if bytes.Contains(pcap, []byte("quic-payload-must-not-be-visible")) {
		t.Fatal("payload in clear text on the wire")
	}

	// n1's access log: to b, TCP once then QUIC; to the waypoint, TCP.
	toB := w.n1.z.waitLogCount(t, rounds+1, "direction=outbound", "dst.addr=10.2.1.2:8080")
	toWaypoint := w.n1.z.waitLogCount(t, rounds, "direction=outbound", "dst.hbone_addr=10.2.3.2:15008")
	if n := countWith(toB, "transport=tcp"); n != 1 {
		t.Errorf("%d connections to b over TCP, want 1 (the first):\n%s", n, strings.Join(toB, "\n"))
	}
	if n := countWith(toB, "transport=quic"); n != rounds {
		t.Errorf("%d connections to b over QUIC, want %d:\n%s", n, rounds, strings.Join(toB, "\n"))
	}
	if n := countWith(toWaypoint, "transport=tcp"); n != rounds {
		t.Errorf("%d connections to the TCP-only waypoint over TCP, want %d:\n%s", n, rounds, strings.Join(toWaypoint, "\n"))
	}
	// b's ztunnel saw them arrive the same way.
	w.n2.z.waitLog(t, "direction=inbound", "dst.workload=b", "transport=quic")
	for _, z := range []*ztunnel{w.n1.z, w.n2.z} {
		_, metrics, err := z.get(z.ports.metrics, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(metrics, `transport="quic"`) || !strings.Contains(metrics, `istio_tcp_connections_opened_total{`) {
			t.Errorf("metrics lack a connection with transport=\"quic\":\n%.2000s", grepMetric(metrics, "istio_tcp_connections_opened_total"))
		}
	}
}

// TestHBONEOverQUICWithUDPBlocked: a firewall drops UDP 15008 between
// the nodes. Every connection still succeeds, over TCP: the first one
// that tries QUIC waits the fallback delay (reported, not asserted), and
// the failure is remembered for the next ones.
func TestHBONEOverQUICWithUDPBlocked(t *testing.T) {
	w := twoNodes(t, "")
	inpodtest.DropUDP(t, w.n2.ns.File, inpod.InboundHBONEPort)
	const rounds = 5
	for i := range rounds {
		start := time.Now()
		got, err := w.a.greet(t, "10.2.1.2:8080")
		if err != nil || got != "b 10.1.1.2" {
			t.Fatalf("connection %d: %q, %v", i+1, got, err)
		}
		t.Logf("connection %d took %v", i+1, time.Since(start))
	}
	lines := w.n1.z.waitLogCount(t, rounds, "direction=outbound", "dst.addr=10.2.1.2:8080")
	if n := countWith(lines, "transport=tcp"); n != rounds {
		t.Errorf("%d of %d connections over TCP:\n%s", n, rounds, strings.Join(lines, "\n"))
	}
	fallback := w.n1.z.waitLog(t, "QUIC did not connect, using TCP")
	t.Logf("the fallback, as ztunnel logged it: %s", fallback)
	if n := strings.Count(w.n1.z.logs.String(), "QUIC did not connect, using TCP"); n != 1 {
		t.Errorf("QUIC tried and abandoned %d times, want once (then remembered)", n)
	}
}

func countWith(lines []string, part string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, part) {
			n++
		}
	}
	return n
}

func grepMetric(metrics, name string) string {
	var out []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestInboundAnswers checks the HBONE answers of a pod's ztunnel to a
// client speaking HBONE directly (from the node, with a's certificate).
func TestInboundAnswers(t *testing.T) {
	w := twoNodes(t, "")
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	aID, _ := identity.WorkloadID(td, "default", "sa-a")
	bID, _ := identity.WorkloadID(td, "default", "sa-b")
	cert, err := identity.NewManager(identity.LocalCAClient{CA: w.m.ca}, identity.ManagerOptions{}).Get(t.Context(), aID)
	if err != nil {
		t.Fatal(err)
	}
	client, err := hbone.NewClient(hbone.ClientConfig{
		Bundles: identity.NewBundles(w.m.ca.Bundle()),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return inpodtest.Dial(ctx, w.n1.ns.File, addr, netip.AddrPort{}, inpodtest.SocketOpts{})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := netip.MustParseAddrPort("10.2.1.2:15008")
	tests := []struct {
		name, authority string
		want            int // HTTP status, 200 for a tunnel
	}{
		{"the pod's application", "10.2.1.2:8080", 200},
		{"another address", "10.2.1.99:8080", 400},
		{"a ztunnel port", "10.2.1.2:15001", 400},
		{"nothing listening", "10.2.1.2:9999", 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, &cert.TLS, server, netip.MustParseAddrPort(tt.authority), []spiffeid.ID{bID}, nil)
			var se *hbone.StatusError
			switch {
			case tt.want == 200 && err != nil:
				t.Fatalf("CONNECT %s: %v", tt.authority, err)
			case tt.want == 200:
				line, err := bufio.NewReader(c).ReadString('\n')
				c.Close()
				// The node's address: the HBONE connection came from it.
				if err != nil || line != "b 10.10.0.1\n" {
					t.Fatalf("greeting %q, %v", line, err)
				}
			case !errors.As(err, &se) || se.Code != tt.want:
				t.Fatalf("CONNECT %s: %v, want status %d", tt.authority, err, tt.want)
			}
		})
	}
	// A server presenting another identity than expected is refused.
	_, err = client.Dial(t.Context(), &cert.TLS, server, netip.MustParseAddrPort("10.2.1.2:8080"), []spiffeid.ID{aID}, nil)
	var sm *hbone.SANMismatchError
	if !errors.As(err, &sm) {
		t.Fatalf("dial expecting the wrong identity: %v", err)
	}
}

// A node whose ztunnel freezes (SIGSTOP: its kernel still acknowledges
// TCP, so nothing below HTTP/2 notices) fails its peers' connections at
// the HBONE health check set by the flags, not after TCP's quarter of an
// hour of retransmits; once it runs again, new connections get through.
func TestFrozenPeerFailsConnectionsAtHealthCheck(t *testing.T) {
	w := twoNodes(t, "", "--hbone-transport", "tcp", "--hbone-ping-interval", "500ms", "--hbone-ping-timeout", "500ms")
	c, err := w.a.dial(t, "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "b ") {
		t.Fatalf("greeting %q, %v", line, err)
	}

	z2 := w.n2.z.cmd.Process
	if err := z2.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			z2.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume) // before the ztunnel's own cleanup stops it

	// The bound is for a broken health check; it ends the connection
	// about a second after the freeze.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection to the frozen node is still open 20s later (read: %v)", err)
	}
	// The flags' interval and timeout, not the defaults (10s and 5s).
	w.n1.z.waitLog(t, "closing a connection whose peer went silent", "remote=10.2.1.2:15008", "silentAtLeast=1s")

	resume()
	if got, err := w.a.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.1.2" {
		t.Fatalf("after the node resumed: greeting %q, %v", got, err)
	}
}
