package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// ztunnelBin is built once by TestMain, with buildFlags.
var (
	ztunnelBin string
	buildFlags []string
)

// echoServerEnv makes the test binary an echo server on the address it
// holds: a process of its own, for benchmarks with many connections.
const echoServerEnv = "ZTUNNEL_TEST_ECHO_SERVER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(echoServerEnv); addr != "" {
		runEchoServer(addr)
		return
	}
	if os.Geteuid() != 0 {
		// Every test here needs network namespaces; each skips itself.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ztunnel-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ztunnelBin = filepath.Join(dir, "ztunnel")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", ztunnelBin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if !slices.Contains(buildFlags, "-race") {
		// As shipped (make build): static, no libc mapped. The race
		// detector needs cgo.
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ztunnel:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const trustDomain = "cluster.local"

// mesh is a test world: a CA, a local config file and nodes.
type mesh struct {
	t      testing.TB
	dir    string
	ca     *identity.CA
	config string // path of the local config file
	// xds, when set, is the control plane address ztunnels use instead
	// of the local config file.
	xds string
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	inpodtest.RequireRoot(t)
	dir := t.TempDir()
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: spiffeid.RequireTrustDomainFromString(trustDomain), Dir: filepath.Join(dir, "ca")})
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, dir: dir, ca: ca, config: filepath.Join(dir, "config.yaml")}
}

// writeConfig replaces the local config file atomically.
func (m *mesh) writeConfig(yaml string) {
	m.t.Helper()
	tmp := m.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, m.config); err != nil {
		m.t.Fatal(err)
	}
}

// node is a network namespace running a ztunnel, with a node agent (a
// zds.Server run by the test) handing it the node's pods.
type node struct {
	m     *mesh
	name  string
	ns    *inpodtest.NetNS
	agent *zds.Server
	sock  string
	z     *ztunnel
}

// pod is a network namespace behind a veth on a node.
type pod struct {
	name string
	ns   *inpodtest.NetNS
	ip   netip.Addr
}

func (m *mesh) newNode(name string) *node {
	m.t.Helper()
	ns := inpodtest.NewNetNS(m.t, "zt"+name+"-")
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		m.t.Fatal(err)
	}
	sock := filepath.Join(m.dir, name+".sock")
	agent, err := zds.NewServer(sock, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Serve(ctx) }()
	m.t.Cleanup(func() { cancel(); <-done; agent.Close() })
	return &node{m: m, name: name, ns: ns, agent: agent, sock: sock}
}

// link connects two nodes; each routes everything it does not know to the
// other.
func link(t testing.TB, a, b *node, aIP, bIP string) {
	inpodtest.Veth(t, a.ns, "to-"+b.name, netip.MustParsePrefix(aIP+"/24"), b.ns, "to-"+a.name, netip.MustParsePrefix(bIP+"/24"))
	inpodtest.DefaultRoute(t, a.ns, netip.MustParseAddr(bIP))
	inpodtest.DefaultRoute(t, b.ns, netip.MustParseAddr(aIP))
}

// addPod creates a pod with address ip (gateway: .1 of its /24) on n.
// With mesh set, it installs the in-pod redirect rules and hands the pod
// to ztunnel through the node agent.
func (n *node) addPod(name, ip string, sa string, mesh bool) *pod {
	t := n.m.t
	t.Helper()
	p := &pod{name: name, ns: inpodtest.NewNetNS(t, "ztp-"), ip: netip.MustParseAddr(ip)}
	gw := p.ip.As4()
	gw[3] = 1
	inpodtest.Veth(t, p.ns, "eth0", netip.PrefixFrom(p.ip, 24), n.ns, "v"+name, netip.PrefixFrom(netip.AddrFrom4(gw), 24))
	inpodtest.DefaultRoute(t, p.ns, netip.AddrFrom4(gw))
	if mesh {
		if err := (inpod.Rules{}).Install(p.ns.File); err != nil {
			t.Fatal(err)
		}
		if err := n.agent.AddWorkload(t.Context(), zds.Workload{UID: "uid-" + name, Name: name, Namespace: "default", ServiceAccount: sa}, p.ns.File); err != nil && !isNotConnected(err) {
			t.Fatalf("adding pod %s: %v", name, err)
		}
	}
	return p
}

func isNotConnected(err error) bool {
	return err != nil && strings.Contains(err.Error(), zds.ErrNotConnected.Error())
}

// ztunnel is a running ztunnel process.
type ztunnel struct {
	cmd     *exec.Cmd
	logs    *syncBuffer
	ns      *inpodtest.NetNS
	ports   ports
	done    chan struct{}
	waitErr error
}

type ports struct{ admin, metrics, readiness int }

var defaultPorts = ports{15000, 15020, 15021}

// startZtunnel runs ztunnel in the node's namespace and waits until it is
// ready.
func (n *node) startZtunnel(p ports, extra ...string) *ztunnel {
	t := n.m.t
	t.Helper()
	args := []string{"netns", "exec", n.ns.Name, ztunnelBin,
		"--mode", "inpod", "--node-name", n.name,
		"--zds-socket", n.sock,
		"--admin-addr", fmt.Sprintf("127.0.0.1:%d", p.admin),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", p.metrics),
		"--readiness-addr", fmt.Sprintf("127.0.0.1:%d", p.readiness),
		"--drain-timeout", "10s",
		"--log-level", "debug",
	}
	if n.m.xds != "" {
		args = append(args, "--xds-address", n.m.xds, "--xds-root-cert", filepath.Join(n.m.dir, "ca", "ca-cert.pem"),
			"--token-file", filepath.Join(n.m.dir, "token"))
	} else {
		args = append(args, "--local-config", n.m.config,
			"--ca-cert", filepath.Join(n.m.dir, "ca", "ca-cert.pem"),
			"--ca-key", filepath.Join(n.m.dir, "ca", "ca-key.pem"))
	}
	cmd := exec.Command("ip", append(args, extra...)...)
	z := &ztunnel{cmd: cmd, logs: &syncBuffer{}, ns: n.ns, ports: p, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = z.logs, z.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { z.waitErr = cmd.Wait(); close(z.done) }()
	t.Cleanup(func() {
		z.stop()
		if strings.Contains(z.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("ztunnel %s reported a data race", n.name)
		}
		if t.Failed() {
			t.Logf("ztunnel %s logs:\n%s", n.name, z.logs.String())
		}
	})
	z.waitReady(t)
	n.z = z
	return z
}

// stop sends SIGTERM and waits for the process to exit.
func (z *ztunnel) stop() error {
	select {
	case <-z.done:
		return z.waitErr
	default:
	}
	z.cmd.Process.Signal(syscall.SIGTERM)
	<-z.done
	return z.waitErr
}

func (z *ztunnel) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return inpodtest.Dial(ctx, z.ns.File, addr, netip.AddrPort{}, inpodtest.SocketOpts{})
		},
		DisableKeepAlives: true,
	}}
}

func (z *ztunnel) get(port int, path string) (int, string, error) {
	resp, err := z.httpClient().Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady polls the readiness endpoint, as a kubelet would, until the
// process reports ready or exits.
func (z *ztunnel) waitReady(t testing.TB) {
	t.Helper()
	ctx := bounded(t)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if code, _, err := z.get(z.ports.readiness, "/healthz/ready"); err == nil && code == 200 {
			return
		}
		select {
		case <-z.done:
			t.Fatalf("ztunnel exited before it was ready: %v\n%s", z.waitErr, z.logs.String())
		case <-ctx.Done():
			t.Fatal("ztunnel never became ready")
		case <-tick.C:
		}
	}
}

// waitConfig polls /config_dump until it contains want (after a reload).
func (z *ztunnel) waitConfig(t testing.TB, want string) {
	t.Helper()
	ctx := bounded(t)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, body, err := z.get(z.ports.admin, "/config_dump"); err == nil && strings.Contains(body, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("config never contained %q", want)
		case <-tick.C:
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveEcho runs an application in the pod: each connection gets a line
// "<pod> <client ip>" and then an echo of what it sends.
func (p *pod) serveEcho(t testing.TB, port int) {
	t.Helper()
	p.serveEchoOn(t, fmt.Sprintf("0.0.0.0:%d", port))
}

// serveEchoOn is serveEcho on a given address.
func (p *pod) serveEchoOn(t testing.TB, addr string) {
	t.Helper()
	ln, err := inpodtest.Listen(p.ns.File, addr, inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s %s\n", p.name, host)
				io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from inside the pod, as its application would.
func (p *pod) dial(t testing.TB, addr string) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return inpodtest.Dial(ctx, p.ns.File, addr, netip.AddrPort{}, inpodtest.SocketOpts{})
}

// greet connects to addr from the pod and returns the echo server's
// greeting line ("<pod> <client ip>"), after checking the echo.
func (p *pod) greet(t testing.TB, addr string) (string, error) {
	t.Helper()
	c, err := p.dial(t, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading greeting: %w", err)
	}
	const msg = "ping\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	echo, err := r.ReadString('\n')
	if err != nil || echo != msg {
		return "", fmt.Errorf("echo %q, %v", echo, err)
	}
	return strings.TrimSpace(line), nil
}

// waypoint is an HBONE server standing in for a waypoint proxy: it records
// the authority and peer of each tunnel and answers with a greeting.
type waypoint struct {
	mu   sync.Mutex
	seen []string // "<peer> <authority>"
}

func (m *mesh) serveWaypoint(t testing.TB, p *pod, sa string) *waypoint {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	id, err := identity.WorkloadID(td, "default", sa)
	if err != nil {
		t.Fatal(err)
	}
	mgr := identity.NewManager(identity.LocalCAClient{CA: m.ca}, identity.ManagerOptions{})
	cert, err := mgr.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	wp := &waypoint{}
	srv, err := hbone.NewServer(hbone.ServerConfig{
		TrustDomain:    td,
		Bundles:        identity.NewBundles(m.ca.Bundle()),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert.TLS, nil },
		Handler: hbone.HandlerFunc(func(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
			wp.mu.Lock()
			wp.seen = append(wp.seen, r.Peer.String()+" "+r.Authority.String())
			wp.mu.Unlock()
			c, err := w.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "waypoint %s\n", r.Authority)
			io.Copy(c, c)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := inpodtest.Listen(p.ns.File, "0.0.0.0:15008", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return wp
}

func (w *waypoint) tunnels() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

// waitLog waits until one line of the process's log contains every part.
func (z *ztunnel) waitLog(t testing.TB, parts ...string) string {
	t.Helper()
	ctx := bounded(t)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, line := range strings.Split(z.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return line
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line with %q", parts)
		case <-tick.C:
		}
	}
}

// waitLogCount waits until n lines of the process's log contain every
// part, and returns them.
func (z *ztunnel) waitLogCount(t testing.TB, n int, parts ...string) []string {
	t.Helper()
	ctx := bounded(t)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var found []string
		for _, line := range strings.Split(z.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				found = append(found, line)
			}
		}
		if len(found) >= n {
			return found
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d log lines with %q, want %d", len(found), parts, n)
		case <-tick.C:
		}
	}
}

// bounded returns a context that ends with the test or after a generous
// bound, so that a broken test fails instead of hanging.
func bounded(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// greetLine connects from the pod and returns the first line it receives.
func (p *pod) greetLine(t testing.TB, addr string) (string, error) {
	t.Helper()
	c, err := p.dial(t, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func runEchoServer(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		// A plain copy loop: io.Copy would splice through a pipe, three
		// descriptors per connection.
		go func() {
			io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 512))
			c.Close()
		}()
	}
}
