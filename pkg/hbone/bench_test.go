package hbone_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
)

// BenchmarkPaths measures four ways to carry a TCP connection, side by side
// in one run: plain TCP, HBONE over TCP, HBONE over QUIC, and a pair of
// stunnel processes doing mutual TLS 1.3. For each it measures bulk
// throughput on one connection and the CPU time spent per GB of it (this
// process's, which holds both ends of every tunnel, the sender and the sink;
// plus the stunnel processes'), round-trip latency of 1 KB messages, and
// the tunnel's memory per idle open stream, then prints every path's ratio
// to plain TCP and to stunnel, and HBONE over QUIC's to HBONE over TCP.
// Run it with `make bench-hbone`.
func BenchmarkPaths(b *testing.B) {
	env := newBenchEnv(b)
	results := make(map[string]*pathResult)
	for _, p := range env.paths {
		r := &pathResult{}
		results[p.name] = r
		b.Run(p.name+"/bulk", func(b *testing.B) { benchBulk(b, p, env.sink, r) })
		b.Run(p.name+"/rr-1KB", func(b *testing.B) { benchRoundTrip(b, p, env.echo, r) })
	}
	for _, p := range env.paths {
		mem, err := idleMemory(b, p, env)
		if err != nil {
			b.Fatalf("%s: idle memory: %v", p.name, err)
		}
		results[p.name].idleBytes = mem
	}
	printRatios(env.paths, results)
}

// path is one way to open a connection to a target address.
type path struct {
	name string
	dial func(ctx context.Context, target netip.AddrPort) (net.Conn, error)
	// pids are the peer processes carrying connections to target, whose
	// CPU and memory count for this path; nil means the path runs inside
	// this process.
	pids func(target netip.AddrPort) []int
}

type pathResult struct {
	bytesPerSec float64
	cpuPerGB    float64 // CPU seconds per 1e9 bytes moved in bulk
	p50, p99    time.Duration
	idleBytes   float64 // tunnel memory per idle stream
}

type benchEnv struct {
	paths      []path
	sink, echo netip.AddrPort
}

const (
	bulkChunk    = 64 << 10
	idleStreams  = 1000
	rrSize       = 1024
	benchTimeout = 5 * time.Minute
)

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	b.Cleanup(cancel)

	sink, err := benchpeer.Sink(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	echo, err := benchpeer.Echo(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { echo.Close() })
	env := &benchEnv{
		sink: sink.Addr().AddrPort(),
		echo: echo.Addr().AddrPort(),
	}

	pki := newBenchPKI(ctx, b)
	// The HBONE server does what ztunnel's inbound does: connect to the
	// authority and splice.
	var d net.Dialer
	scfg := pki.serverConfig(spliceHandler(d.DialContext))
	tcpSrv, err := hbone.NewServer(scfg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go tcpSrv.Serve(ln)
	b.Cleanup(func() { tcpSrv.Close() })
	quicSrv, err := hbone.NewQUICServer(scfg)
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go quicSrv.Serve(pc)
	b.Cleanup(func() { quicSrv.Close() })

	ccfg := hbone.ClientConfig{Bundles: pki.bundles, Logger: slog.New(slog.DiscardHandler)}
	tcpClient, err := hbone.NewClient(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tcpClient.Close() })
	quicClient, err := hbone.NewQUICClient(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { quicClient.Close() })

	viaHBONE := func(d hbone.Dialer, server netip.AddrPort) func(context.Context, netip.AddrPort) (net.Conn, error) {
		return func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			return d.Dial(ctx, &pki.client.TLS, server, target, []spiffeid.ID{pki.serverID}, nil)
		}
	}

	// stunnel forwards to one fixed target, so each target gets its own
	// pair; both share the same certificates.
	dir := b.TempDir()
	files := writeTLSFiles(b, dir, pki.ca, pki.client, pki.server)
	stunnels := make(map[netip.AddrPort]*benchpeer.Stunnel)
	for _, target := range []netip.AddrPort{env.sink, env.echo} {
		sub := filepath.Join(dir, target.String())
		if err := os.Mkdir(sub, 0o700); err != nil {
			b.Fatal(err)
		}
		st, err := benchpeer.StartStunnel(ctx, sub, files.client, files.server, target.String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(st.Close)
		stunnels[target] = st
	}

	env.paths = []path{
		{name: "plain-tcp", dial: func(ctx context.Context, t netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", t.String())
		}},
		{name: "hbone-tcp", dial: viaHBONE(tcpClient, netip.MustParseAddrPort(ln.Addr().String()))},
		{name: "hbone-quic", dial: viaHBONE(quicClient, netip.MustParseAddrPort(pc.LocalAddr().String()))},
		{name: "stunnel", dial: func(ctx context.Context, t netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", stunnels[t].ClientAddr)
		}, pids: func(t netip.AddrPort) []int { return stunnels[t].PIDs() }},
	}
	return env
}

// benchPKI is a trust domain with a client and a server identity.
type benchPKI struct {
	ca             *identity.CA
	bundles        *identity.Bundles
	client, server *identity.Certificate
	serverID       spiffeid.ID
}

func newBenchPKI(ctx context.Context, b *testing.B) *benchPKI {
	b.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		b.Fatal(err)
	}
	certs := identity.NewManager(ca.Client(), identity.ManagerOptions{})
	clientID, _ := identity.WorkloadID(td, "bench", "client")
	serverID, _ := identity.WorkloadID(td, "bench", "server")
	client, err := certs.Get(ctx, clientID)
	if err != nil {
		b.Fatal(err)
	}
	server, err := certs.Get(ctx, serverID)
	if err != nil {
		b.Fatal(err)
	}
	return &benchPKI{ca: ca, bundles: identity.NewBundles(ca.Bundle()), client: client, server: server, serverID: serverID}
}

func (p *benchPKI) serverConfig(h hbone.Handler) hbone.ServerConfig {
	return hbone.ServerConfig{
		TrustDomain: p.serverID.TrustDomain(),
		Bundles:     p.bundles,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &p.server.TLS, nil
		},
		Handler: h,
		Logger:  slog.New(slog.DiscardHandler),
	}
}

// spliceHandler answers a CONNECT as ztunnel's inbound does: it connects
// to the authority with dial and splices the tunnel to it.
func spliceHandler(dial func(ctx context.Context, network, addr string) (net.Conn, error)) hbone.Handler {
	return hbone.HandlerFunc(func(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
		up, err := dial(ctx, "tcp", r.Authority.String())
		if err != nil {
			w.Refuse(http.StatusServiceUnavailable)
			return
		}
		tun, err := w.Accept()
		if err != nil {
			up.Close()
			return
		}
		hbone.Splice(ctx, tun, up)
	})
}

type tlsFiles struct{ client, server benchpeer.TLSFiles }

func writeTLSFiles(b *testing.B, dir string, ca *identity.CA, client, server *identity.Certificate) tlsFiles {
	b.Helper()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", identity.EncodeCertificatesPEM(ca.Roots()))
	side := func(name string, c *identity.Certificate) benchpeer.TLSFiles {
		signer, ok := c.TLS.PrivateKey.(crypto.Signer)
		if !ok {
			b.Fatalf("%s key is a %T, not a crypto.Signer", name, c.TLS.PrivateKey)
		}
		key, err := identity.EncodePrivateKeyPEM(signer)
		if err != nil {
			b.Fatal(err)
		}
		return benchpeer.TLSFiles{
			Cert: write(name+"-cert.pem", identity.EncodeCertificatesPEM(c.Chain)),
			Key:  write(name+"-key.pem", key),
			CA:   caFile,
		}
	}
	return tlsFiles{client: side("client", client), server: side("server", server)}
}

// benchBulk sends b.N chunks over one connection to the sink and reports
// bytes per second once the sink has counted every byte, and the CPU time
// the path took per GB meanwhile.
func benchBulk(b *testing.B, p path, sink netip.AddrPort, r *pathResult) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	c, err := p.dial(ctx, sink)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(bulkChunk)
	b.ResetTimer()
	cpu0 := pathCPU(b, p, sink)
	start := time.Now()
	if err := benchpeer.SendBulk(c, int64(b.N)*bulkChunk, bulkChunk); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cpu := pathCPU(b, p, sink) - cpu0
	b.StopTimer()
	bytes := float64(b.N) * bulkChunk
	r.bytesPerSec = bytes / elapsed.Seconds()
	r.cpuPerGB = cpu.Seconds() / (bytes / 1e9)
	b.ReportMetric(r.cpuPerGB, "cpu-s/GB")
}

// pathCPU is the CPU time used so far by this process and by the peer
// processes of p that carry connections to target.
func pathCPU(b *testing.B, p path, target netip.AddrPort) time.Duration {
	cpu, err := benchpeer.SelfCPUTime()
	if err != nil {
		b.Fatal(err)
	}
	if p.pids != nil {
		cpu += benchpeer.CPUTime(p.pids(target))
	}
	return cpu
}

// benchRoundTrip sends b.N 1 KB messages, one at a time, through the path
// to the echo server and reports the median and 99th percentile.
func benchRoundTrip(b *testing.B, p path, echo netip.AddrPort, r *pathResult) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	c, err := p.dial(ctx, echo)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	rtts, err := benchpeer.RoundTrips(c, rrSize, b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	r.p50 = benchpeer.Percentile(rtts, 50)
	r.p99 = benchpeer.Percentile(rtts, 99)
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
}

// idleMemory opens idleStreams connections through p to the echo server,
// proves each is established end to end, and returns the memory they hold
// per stream: the growth of this process's heap and stacks, plus the growth
// of the peer processes' resident memory. Every path also pays for the
// echo server's side and the client's sockets, so the caller subtracts the
// plain-TCP figure to get the tunnel's own cost.
func idleMemory(b *testing.B, p path, env *benchEnv) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	before := memNow(p, env.echo)
	conns := make([]net.Conn, 0, idleStreams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idleStreams {
		c, err := p.dial(ctx, env.echo)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		if _, err := benchpeer.RoundTrips(c, 1, 1); err != nil {
			return 0, err
		}
	}
	after := memNow(p, env.echo)
	return float64(after-before) / idleStreams, nil
}

func memNow(p path, target netip.AddrPort) int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	total := int64(ms.HeapInuse + ms.StackInuse)
	if p.pids != nil {
		for _, pid := range p.pids(target) {
			rss, err := benchpeer.RSS(pid)
			if err == nil {
				total += rss
			}
		}
	}
	return total
}

func printRatios(paths []path, res map[string]*pathResult) {
	plain, st := res["plain-tcp"], res["stunnel"]
	fmt.Println()
	fmt.Println("HBONE paths side by side (ratios: to plain TCP / to stunnel)")
	fmt.Printf("%-11s %10s %12s %9s %12s %9s %9s %13s %15s\n",
		"path", "bulk MB/s", "ratio", "CPU s/GB", "ratio", "p50 µs", "p99 µs", "added p50 µs", "idle KB/stream")
	for _, p := range paths {
		r := res[p.name]
		added := r.p50 - plain.p50
		idle := (r.idleBytes - plain.idleBytes) / 1024
		if p.name == "plain-tcp" {
			idle = 0
		}
		fmt.Printf("%-11s %10.0f %5.2f/%5.2f %9.2f %5.2f/%5.2f %9.1f %9.1f %13.1f %15.1f\n",
			p.name, r.bytesPerSec/1e6,
			r.bytesPerSec/plain.bytesPerSec, r.bytesPerSec/st.bytesPerSec,
			r.cpuPerGB, r.cpuPerGB/plain.cpuPerGB, r.cpuPerGB/st.cpuPerGB,
			us(r.p50), us(r.p99), us(added), idle)
	}
	fmt.Println("CPU s/GB is the CPU time per 1e9 bytes of bulk: this process (sender, sink and both")
	fmt.Println("ends of the tunnel) plus, for stunnel, its two processes. added p50 is the path's")
	fmt.Println("median round trip minus plain TCP's; idle KB/stream is the tunnel's own memory")
	fmt.Println("(both ends) per idle open stream, plain TCP's cost subtracted.")
	if q, t := res["hbone-quic"], res["hbone-tcp"]; q != nil && t != nil {
		fmt.Printf("hbone-quic / hbone-tcp: bulk %.2fx (issue 16's target: at least 0.80x), CPU per GB %.2fx, p50 %.2fx\n",
			q.bytesPerSec/t.bytesPerSec, q.cpuPerGB/t.cpuPerGB, float64(q.p50)/float64(t.p50))
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
