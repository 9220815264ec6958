package main_test

import (
	"context"
	"crypto"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// BenchmarkZtunnel measures pod-to-pod traffic between two nodes (network
// namespaces linked by a veth, pods behind veths) three ways in one run:
// direct, through a pair of stunnel processes (mutual TLS 1.3, one in
// each pod), and through the two nodes' ztunnels (in-pod mode, HBONE). For
// each it reports bulk throughput on one connection and the p50/p99
// latency of 1 KB request/responses at a fixed 1,000 requests/s; for
// ztunnel also its CPU per 1,000 requests/s, its RSS when idle with 100
// local workloads, and its RSS per open connection with 10,000 open.
// Run it with `make bench-ztunnel` (needs root).
func BenchmarkZtunnel(b *testing.B) {
	inpodtest.RequireRoot(b)
	// 10,000 connections take 10,000 descriptors in this process and in
	// each ztunnel; their server side runs in a process of its own.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max < openConns+1000 {
		b.Fatalf("the open file limit (%d) is too low for %d connections", lim.Max, openConns)
	}
	w := newBenchWorld(b)
	// The paths take turns, round after round, and each figure is the
	// median of its rounds: other load on the machine then weighs on every
	// path alike, and one disturbed round does not decide a ratio.
	runs := map[string][]benchResult{}
	for round := 1; round <= benchRounds; round++ {
		for _, p := range w.paths {
			var r benchResult
			b.Run(fmt.Sprintf("%s/bulk/round-%d", p.name, round), func(b *testing.B) { benchBulk(b, p, &r) })
			b.Run(fmt.Sprintf("%s/rate-1000/round-%d", p.name, round), func(b *testing.B) { benchRate(b, p, &r) })
			runs[p.name] = append(runs[p.name], r)
		}
	}
	res := map[string]*benchResult{}
	for name, rs := range runs {
		res[name] = &benchResult{
			bytesPerSec: median(rs, func(r benchResult) float64 { return r.bytesPerSec }),
			p50:         time.Duration(median(rs, func(r benchResult) float64 { return float64(r.p50) })),
			p99:         time.Duration(median(rs, func(r benchResult) float64 { return float64(r.p99) })),
			cpu:         median(rs, func(r benchResult) float64 { return r.cpu }),
		}
	}
	// Measured once each, not scaled by b.N.
	idle := benchIdle(b)
	perConn := benchOpenConns(b, w)
	printBench(w.paths, res, idle, perConn)
}

const (
	sinkPort    = 9000
	echoPort    = 9001
	rate        = 1000 // requests per second, over all connections
	rateConns   = 10
	rateFor     = 5 * time.Second
	msgSize     = 1024
	openConns   = 10000
	idlePods    = 100
	benchBulkKB = 64
	benchRounds = 3
)

// median is the median of f over rs.
func median(rs []benchResult, f func(benchResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

type benchPath struct {
	name string
	// dial connects from the client pod to the server's port.
	dial func(ctx context.Context, port int) (net.Conn, error)
	// pids are the processes whose CPU the path costs.
	pids func() []int
}

type benchResult struct {
	bytesPerSec float64
	p50, p99    time.Duration
	cpu         float64 // vCPU used by pids during the fixed-rate run
}

type benchWorld struct {
	m       *mesh
	n1, n2  *node
	a, bPod *pod // in the mesh
	c, d    *pod // outside it
	paths   []benchPath
}

func newBenchWorld(b *testing.B) *benchWorld {
	m := newMesh(b)
	m.writeConfig(`
workloads:
- {name: a, namespace: default, serviceAccount: sa-a, addresses: [10.1.1.2], node: n1}
- {name: b, namespace: default, serviceAccount: sa-b, addresses: [10.2.1.2], node: n2}
`)
	w := &benchWorld{m: m, n1: m.newNode("n1"), n2: m.newNode("n2")}
	link(b, w.n1, w.n2, "10.10.0.1", "10.10.0.2")
	w.a = w.n1.addPod("a", "10.1.1.2", "sa-a", true)
	w.bPod = w.n2.addPod("b", "10.2.1.2", "sa-b", true)
	w.c = w.n1.addPod("c", "10.1.2.2", "", false)
	w.d = w.n2.addPod("d", "10.2.2.2", "", false)
	for _, p := range []*pod{w.bPod, w.d} {
		serveSink(b, p, sinkPort)
		serveEchoRaw(b, p, echoPort)
	}
	// The two nodes share this machine's cores: each ztunnel runs on one.
	// HBONE over TCP, the path the peers are compared with (over QUIC,
	// only the tunnel library's benchmark measures it yet).
	quiet := []string{"--log-level", "warn", "--worker-threads", "1", "--hbone-transport", "tcp"}
	z1 := w.n1.startZtunnel(defaultPorts, quiet...)
	z2 := w.n2.startZtunnel(defaultPorts, quiet...)
	st := startStunnelPair(b, m, w.c, w.d)
	hp := startHAProxyPair(b, w.c, w.d)

	dialFrom := func(p *pod, host string) func(context.Context, int) (net.Conn, error) {
		return func(ctx context.Context, port int) (net.Conn, error) {
			return inpodtest.Dial(ctx, p.ns.File, net.JoinHostPort(host, strconv.Itoa(port)), netip.AddrPort{}, inpodtest.SocketOpts{})
		}
	}
	w.paths = []benchPath{
		{name: "direct", dial: dialFrom(w.c, "10.2.2.2"), pids: func() []int { return nil }},
		{name: "haproxy", dial: func(ctx context.Context, port int) (net.Conn, error) {
			return dialFrom(w.c, "127.0.0.1")(ctx, hp.clientPort[port])
		}, pids: hp.pids},
		{name: "stunnel", dial: func(ctx context.Context, port int) (net.Conn, error) {
			return dialFrom(w.c, "127.0.0.1")(ctx, st.clientPort[port])
		}, pids: st.pids},
		{name: "ztunnel", dial: dialFrom(w.a, "10.2.1.2"), pids: func() []int {
			return []int{z1.cmd.Process.Pid, z2.cmd.Process.Pid}
		}},
	}
	return w
}

// serveSink counts bytes until EOF and answers the count (benchpeer's sink
// protocol), on every address of the pod.
func serveSink(b *testing.B, p *pod, port int) {
	serveFunc(b, p, port, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, uint64(n))
	})
}

func serveEchoRaw(b *testing.B, p *pod, port int) {
	serveFunc(b, p, port, func(c net.Conn) { io.Copy(c, c) })
}

func serveFunc(b *testing.B, p *pod, port int, h func(net.Conn)) {
	ln, err := inpodtest.Listen(p.ns.File, fmt.Sprintf("0.0.0.0:%d", port), inpodtest.SocketOpts{})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				h(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
}

// relayPair is a relay in the client pod (accepting on 127.0.0.1) and
// one in the server pod, one service per server port: a stunnel pair
// (mutual TLS) or an HAProxy pair (plain TCP, the floor for any relay).
type relayPair struct {
	clientPort map[int]int // server port → client-side local port
	procs      []*exec.Cmd
}

func (s *relayPair) pids() []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, p.Process.Pid)
	}
	return out
}

func startStunnelPair(b *testing.B, m *mesh, client, server *pod) *relayPair {
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		b.Skip("stunnel4 not installed (make bench-ztunnel installs it)")
	}
	dir := b.TempDir()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	mgr := identity.NewManager(identity.LocalCAClient{CA: m.ca}, identity.ManagerOptions{})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", identity.EncodeCertificatesPEM(m.ca.Roots()))
	side := func(name string) (cert, key string) {
		id, _ := identity.WorkloadID(td, "default", name)
		c, err := mgr.Get(b.Context(), id)
		if err != nil {
			b.Fatal(err)
		}
		k, err := identity.EncodePrivateKeyPEM(c.TLS.PrivateKey.(crypto.Signer))
		if err != nil {
			b.Fatal(err)
		}
		return write(name+"-cert.pem", identity.EncodeCertificatesPEM(c.Chain)), write(name+"-key.pem", k)
	}
	conf := func(name, cert, key string) string {
		return strings.Join([]string{"foreground = yes", "pid =", "debug = 3",
			"output = " + filepath.Join(dir, name+".log"),
			"cert = " + cert, "key = " + key, "CAfile = " + caFile,
			"verifyChain = yes", "requireCert = yes", "sslVersionMin = TLSv1.3", ""}, "\n")
	}
	sc, sk := side("stunnel-server")
	cc, ck := side("stunnel-client")
	serverConf, clientConf := conf("server", sc, sk), conf("client", cc, ck)+"client = yes\n"
	s := &relayPair{clientPort: map[int]int{}}
	for i, port := range []int{sinkPort, echoPort} {
		tlsPort, local := 19000+i, 19100+i
		serverConf += fmt.Sprintf("[s%d]\naccept = %s:%d\nconnect = 127.0.0.1:%d\n", port, server.ip, tlsPort, port)
		clientConf += fmt.Sprintf("[c%d]\naccept = 127.0.0.1:%d\nconnect = %s:%d\n", port, local, server.ip, tlsPort)
		s.clientPort[port] = local
	}
	s.run(b, server, bin, write("stunnel-server.conf", []byte(serverConf)))
	s.run(b, client, bin, write("stunnel-client.conf", []byte(clientConf)))
	s.wait(b, client, "stunnel")
	return s
}

// run starts bin with args in p's network namespace until the benchmark ends.
func (s *relayPair) run(b *testing.B, p *pod, bin string, args ...string) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.ns.Name, bin}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s.procs = append(s.procs, cmd)
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// wait returns once a round trip crosses both relays: the client side may
// accept before the server side listens.
func (s *relayPair) wait(b *testing.B, client *pod, name string) {
	waitRoundTrip(b, bounded(b), name+" pair not working", func(ctx context.Context) (net.Conn, error) {
		return inpodtest.Dial(ctx, client.ns.File, fmt.Sprintf("127.0.0.1:%d", s.clientPort[echoPort]), netip.AddrPort{}, inpodtest.SocketOpts{})
	})
}

// waitRoundTrip returns once one round trip over a connection from dial
// works, retrying until ctx ends (then it fails b with what).
func waitRoundTrip(b *testing.B, ctx context.Context, what string, dial func(context.Context) (net.Conn, error)) {
	for {
		c, err := dial(ctx)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = benchpeer.RoundTrips(c, 1, 1)
			c.Close()
		}
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%s: %v", what, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startHAProxyPair relays plain TCP from the client pod to the server pod
// through two single-threaded HAProxy processes: the same hops as a
// ztunnel pair without TLS or HTTP/2, so its CPU is the floor for any
// relay on this machine.
func startHAProxyPair(b *testing.B, client, server *pod) *relayPair {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		b.Skip("haproxy not installed (make bench-ztunnel installs it)")
	}
	dir := b.TempDir()
	global := "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n"
	serverConf, clientConf := global, global
	s := &relayPair{clientPort: map[int]int{}}
	for i, port := range []int{sinkPort, echoPort} {
		relayPort, local := 19200+i, 19300+i
		serverConf += fmt.Sprintf("listen s%d\n  bind %s:%d\n  server app 127.0.0.1:%d\n", port, server.ip, relayPort, port)
		clientConf += fmt.Sprintf("listen c%d\n  bind 127.0.0.1:%d\n  server peer %s:%d\n", port, local, server.ip, relayPort)
		s.clientPort[port] = local
	}
	for _, side := range []struct {
		name, conf string
		pod        *pod
	}{{"server", serverConf, server}, {"client", clientConf, client}} {
		path := filepath.Join(dir, "haproxy-"+side.name+".cfg")
		if err := os.WriteFile(path, []byte(side.conf), 0o600); err != nil {
			b.Fatal(err)
		}
		s.run(b, side.pod, bin, "-db", "-q", "-f", path)
	}
	s.wait(b, client, "haproxy")
	return s
}

func benchBulk(b *testing.B, p benchPath, r *benchResult) {
	c, err := p.dial(bounded(b), sinkPort)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const chunk = benchBulkKB << 10
	b.SetBytes(chunk)
	b.ResetTimer()
	start := time.Now()
	if err := benchpeer.SendBulk(c, int64(b.N)*chunk, chunk); err != nil {
		b.Fatal(err)
	}
	r.bytesPerSec = float64(b.N) * chunk / time.Since(start).Seconds()
}

// benchRate sends 1 KB requests at a fixed total rate over rateConns
// connections for rateFor and records each latency from the moment the
// request was due (so a slow response delays no measurement), and the
// CPU the path's processes used meanwhile.
func benchRate(b *testing.B, p benchPath, r *benchResult) {
	ctx := bounded(b)
	conns := make([]net.Conn, rateConns)
	for i := range conns {
		c, err := p.dial(ctx, echoPort)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := benchpeer.RoundTrips(c, msgSize, 10); err != nil { // warm up
			b.Fatal(err)
		}
		conns[i] = c
	}
	interval := time.Second * rateConns / rate
	n := int(rateFor / interval)
	cpu0 := cpuTime(p.pids())
	start := time.Now()
	lat := make([][]time.Duration, len(conns))
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, msgSize)
			offset := interval * time.Duration(i) / time.Duration(len(conns))
			for k := range n {
				due := start.Add(offset + time.Duration(k)*interval)
				time.Sleep(time.Until(due))
				if _, err := c.Write(buf); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				lat[i] = append(lat[i], time.Since(due))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failed != nil {
		b.Fatal(failed)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r.p50, r.p99 = benchpeer.Percentile(all, 50), benchpeer.Percentile(all, 99)
	r.cpu = (cpuTime(p.pids()) - cpu0).Seconds() / elapsed.Seconds()
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	b.ReportMetric(r.cpu, "vCPU")
}

// cpuTime sums user and system CPU of the processes (and their threads).
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may contain spaces).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	return total
}

// rss returns the ztunnel's resident memory in its steady state: after a
// few garbage collections (forced through its pprof endpoint), which a
// long-running process gets from the runtime anyway; each lets the
// runtime shrink idle goroutine stacks and return freed memory.
func (z *ztunnel) rss(b testing.TB) int64 {
	for range 3 {
		z.get(z.ports.admin, "/debug/pprof/heap?gc=1")
	}
	v, err := benchpeer.RSS(z.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// benchIdle starts a ztunnel on a third node with idlePods local pods
// (each its own identity, so its own certificate) and returns its RSS once
// it is ready and idle.
func benchIdle(b *testing.B) float64 {
	cfg := "workloads:\n"
	for i := range idlePods {
		cfg += fmt.Sprintf("- {name: p%d, namespace: idle, serviceAccount: sa%d, addresses: [10.3.%d.%d], node: n3}\n", i, i, i/200, 2+i%200)
	}
	m := newMesh(b)
	m.writeConfig(cfg)
	n3 := m.newNode("n3")
	for i := range idlePods {
		ns := inpodtest.NewNetNS(b, "zti-")
		err := n3.agent.AddWorkload(b.Context(), zds.Workload{UID: fmt.Sprintf("idle-%d", i), Name: fmt.Sprintf("p%d", i), Namespace: "idle", ServiceAccount: fmt.Sprintf("sa%d", i)}, ns.File)
		if err != nil && !isNotConnected(err) {
			b.Fatal(err)
		}
	}
	z := n3.startZtunnel(defaultPorts, "--log-level", "warn", "--worker-threads", "1")
	if _, body, _ := z.get(z.ports.admin, "/config_dump"); strings.Count(body, `"state": "available"`) != idlePods {
		b.Fatalf("expected %d certificates available", idlePods)
	}
	rss := float64(z.rss(b))
	anon, file := rssParts(z.cmd.Process.Pid)
	fmt.Printf("idle ztunnel with %d pods: RSS %.1f MB = %.1f MB anonymous + %.1f MB file-backed (the binary's pages)\n",
		idlePods, rss/1e6, float64(anon)/1e6, float64(file)/1e6)
	return rss
}

// benchOpenConns opens openConns connections through the mesh path, each
// proven by a round trip, and returns the two ztunnels' RSS growth per
// connection.
func benchOpenConns(b *testing.B, w *benchWorld) [2]float64 {
	z1, z2 := w.n1.z, w.n2.z
	ctx := bounded(b)
	const port = 9002
	srv := exec.Command("ip", "netns", "exec", w.bPod.ns.Name, os.Args[0])
	srv.Env = append(os.Environ(), fmt.Sprintf("%s=0.0.0.0:%d", echoServerEnv, port))
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	dial := w.paths[len(w.paths)-1].dial
	// Wait for the server process: a round trip through the mesh works.
	waitRoundTrip(b, ctx, "echo server not reachable", func(ctx context.Context) (net.Conn, error) { return dial(ctx, port) })
	before1, before2 := z1.rss(b), z2.rss(b)
	conns := make([]net.Conn, 0, openConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range openConns {
		c, err := dial(ctx, port)
		if err != nil {
			b.Fatalf("after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
		if _, err := benchpeer.RoundTrips(c, 1, 1); err != nil {
			b.Fatalf("after %d connections: %v", len(conns), err)
		}
	}
	after1, after2 := z1.rss(b), z2.rss(b)
	per1, per2 := float64(after1-before1)/openConns, float64(after2-before2)/openConns
	b.ReportMetric(per1/1024, "KB/conn-source")
	b.ReportMetric(per2/1024, "KB/conn-destination")
	return [2]float64{per1, per2}
}

func printBench(paths []benchPath, res map[string]*benchResult, idle float64, perConn [2]float64) {
	direct, hp, st, zt := res["direct"], res["haproxy"], res["stunnel"], res["ztunnel"]
	fmt.Println()
	fmt.Printf("Pod to pod across two nodes: direct, HAProxy pair (plain TCP), stunnel pair (mTLS), ztunnel pair (HBONE); medians of %d interleaved rounds\n", benchRounds)
	fmt.Printf("%-8s %10s %8s %8s %12s %12s %14s %14s %10s\n",
		"path", "bulk MB/s", "÷direct", "÷stunnel", "p50 µs @1k/s", "p99 µs @1k/s", "added p50 µs", "added p99 µs", "vCPU @1k/s")
	for _, p := range paths {
		r := res[p.name]
		fmt.Printf("%-8s %10.0f %8.2f %8.2f %12.0f %12.0f %14.0f %14.0f %10.3f\n",
			p.name, r.bytesPerSec/1e6, r.bytesPerSec/direct.bytesPerSec, r.bytesPerSec/st.bytesPerSec,
			us(r.p50), us(r.p99), us(r.p50-direct.p50), us(r.p99-direct.p99), r.cpu)
	}
	fmt.Println()
	fmt.Printf("ztunnel CPU per 1,000 req/s: %.3f vCPU for both ztunnels, %.3f each (target ≤ 0.03; Istio publishes 0.06); a plain TCP relay (HAProxy) takes %.3f each, stunnel %.3f\n",
		zt.cpu, zt.cpu/2, hp.cpu/2, st.cpu/2)
	fmt.Printf("ztunnel throughput ÷ stunnel: %.2f (target ≥ 1); added p99 ztunnel %.0f µs vs stunnel %.0f µs (target ≤)\n",
		zt.bytesPerSec/st.bytesPerSec, us(zt.p99-direct.p99), us(st.p99-direct.p99))
	fmt.Printf("ztunnel idle RSS with %d local workloads: %.1f MB (target ≤ 20 MB)\n", idlePods, idle/1e6)
	fmt.Printf("ztunnel RSS per open connection (%d open): %.1f KB in the source ztunnel, %.1f KB in the destination's (target ≤ 10 KB)\n",
		openConns, perConn[0]/1024, perConn[1]/1024)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// rssParts reads the anonymous and file-backed parts of a process's RSS.
func rssParts(pid int) (anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb << 10
		case "RssFile:":
			file = kb << 10
		}
	}
	return anon, file
}

// BenchmarkZtunnelIdle measures only the idle RSS with 100 local workloads
// (part of BenchmarkZtunnel), for quick iteration on memory.
func BenchmarkZtunnelIdle(b *testing.B) {
	inpodtest.RequireRoot(b)
	idle := benchIdle(b)
	fmt.Printf("ztunnel idle RSS with %d local workloads: %.1f MB (target ≤ 20 MB)\n", idlePods, idle/1e6)
}
