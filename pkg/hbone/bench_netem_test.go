//go:build linux

package hbone_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

// The lossy path: each way has half the round trip and the whole loss
// rate.
const (
	lossyDelay      = "5ms"
	lossyLoss       = "1%"
	lossyStreams    = 50  // small request/response streams on one connection
	lossyRoundTrips = 20  // per stream, alone and beside the bulk
	lossyMsg        = 128 // bytes of each request, echoed back
	lossyNewConns   = 30  // new connections timed to their first byte
	lossyBulkWarmup = 1 << 20
)

// BenchmarkLossyPath shows where HBONE over QUIC should win over HBONE
// over TCP: a path with a 10 ms round trip and 1 % loss each way, between
// two network namespaces joined by a veth pair with netem on both ends.
// The client is in one namespace; the HBONE servers, and the echo server
// and sink they connect to, are in the other. For each transport it
// measures
//
//   - the time to the first byte on a new connection: dial (QUIC's 1-RTT
//     handshake against TCP's and then TLS's), CONNECT, and one byte
//     echoed back;
//   - the round trips of 50 small request/response streams sharing one
//     connection, alone and then beside a bulk transfer on the same
//     connection: over TCP, one lost segment, or the bulk data queued ahead
//     in the socket, holds up every stream (head-of-line blocking); QUIC
//     streams are delivered independently.
//
// TCP's congestion control is set to CUBIC, as quic-go's, whatever the
// machine's default. A kernel without netem (sch_netem) gets the same delay and loss from a
// user-space relay between two TUN devices instead; the results say which
// made the path. It needs root and iproute2 (ip, tc), and is meant to run
// once: make bench-hbone runs it with -benchtime 1x. Results go to
// stdout, progress to stderr.
func BenchmarkLossyPath(b *testing.B) {
	env := newLossyEnv(b)
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	results := make(map[string]*lossyResult)
	for _, t := range env.transports {
		r := &lossyResult{}
		results[t.name] = r
		progress("lossy path: %s: %d new connections", t.name, lossyNewConns)
		for range lossyNewConns {
			connect, first, err := env.firstByte(ctx, t)
			if err != nil {
				b.Fatalf("%s: first byte on a new connection: %v", t.name, err)
			}
			r.connect = append(r.connect, connect)
			r.ttfb = append(r.ttfb, first)
		}
		progress("lossy path: %s: %d streams on one connection, alone and beside a bulk transfer", t.name, lossyStreams)
		if err := env.shared(ctx, t, r); err != nil {
			b.Fatalf("%s: streams beside a bulk transfer: %v", t.name, err)
		}
	}
	printLossy(env.link, env.transports, results)
	tcp, quic := results["hbone-tcp"], results["hbone-quic"]
	b.ReportMetric(ms(benchpeer.Percentile(tcp.bulkRTTs, 99)), "tcp-p99-ms")
	b.ReportMetric(ms(benchpeer.Percentile(quic.bulkRTTs, 99)), "quic-p99-ms")
	b.ReportMetric(ms(benchpeer.Percentile(tcp.ttfb, 50)), "tcp-ttfb-ms")
	b.ReportMetric(ms(benchpeer.Percentile(quic.ttfb, 50)), "quic-ttfb-ms")
}

type lossyEnv struct {
	link       string // how the path is made lossy
	pki        *benchPKI
	echo, sink netip.AddrPort // in the server's namespace
	transports []lossyTransport
}

// lossyTransport makes clients of one transport, in the client's
// namespace, for the HBONE server at server.
type lossyTransport struct {
	name      string
	server    netip.AddrPort
	newClient func() (lossyClient, error)
}

type lossyClient interface {
	hbone.Dialer
	Stats() hbone.ClientStats
	Close() error
}

type lossyResult struct {
	connect            []time.Duration // until the tunnel is open
	ttfb               []time.Duration
	aloneRTTs          []time.Duration
	bulkRTTs           []time.Duration
	bulkBytesPerSecond float64
	dialed             uint64 // connections the shared client opened
}

func newLossyEnv(b *testing.B) *lossyEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("BenchmarkLossyPath needs root: it creates network namespaces and netem qdiscs")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("BenchmarkLossyPath needs %s from iproute2 (make bench-hbone installs it): %v", tool, err)
		}
	}
	clientNS := inpodtest.NewNetNS(b, "skiff-lossy-c-")
	serverNS := inpodtest.NewNetNS(b, "skiff-lossy-s-")
	clientIP := netip.MustParsePrefix("10.99.0.1/24")
	serverIP := netip.MustParsePrefix("10.99.0.2/24")
	link := lossyLink(b, clientNS, clientIP, serverNS, serverIP)

	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	b.Cleanup(cancel)
	env := &lossyEnv{pki: newBenchPKI(ctx, b), link: link}

	// Sockets belong to the namespace of the thread that creates them,
	// for good: the servers' are made in the server's namespace, the
	// clients' in the client's, and any goroutine may then use them.
	var (
		ln         net.Listener
		pc         net.PacketConn
		sink, echo *benchpeer.Server
	)
	err := serverNS.Do(func() error {
		var err error
		lc := net.ListenConfig{Control: cubic}
		if ln, err = lc.Listen(ctx, "tcp", netip.AddrPortFrom(serverIP.Addr(), 0).String()); err != nil {
			return err
		}
		if pc, err = net.ListenPacket("udp", netip.AddrPortFrom(serverIP.Addr(), 0).String()); err != nil {
			return err
		}
		if sink, err = benchpeer.Sink(ctx); err != nil {
			return err
		}
		echo, err = benchpeer.Echo(ctx)
		return err
	})
	if ln != nil {
		b.Cleanup(func() { ln.Close() })
	}
	if pc != nil {
		b.Cleanup(func() { pc.Close() })
	}
	if sink != nil {
		b.Cleanup(func() { sink.Close() })
	}
	if echo != nil {
		b.Cleanup(func() { echo.Close() })
	}
	if err != nil {
		b.Fatalf("listening in the server's namespace: %v", err)
	}
	env.sink, env.echo = sink.Addr().AddrPort(), echo.Addr().AddrPort()

	dialIn := func(ns *inpodtest.NetNS) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() error {
				var err error
				c, err = (&net.Dialer{Control: cubic}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	scfg := env.pki.serverConfig(spliceHandler(dialIn(serverNS)))
	tcpSrv, err := hbone.NewServer(scfg)
	if err != nil {
		b.Fatal(err)
	}
	go tcpSrv.Serve(ln)
	b.Cleanup(func() { tcpSrv.Close() })
	quicSrv, err := hbone.NewQUICServer(scfg)
	if err != nil {
		b.Fatal(err)
	}
	go quicSrv.Serve(pc)
	b.Cleanup(func() { quicSrv.Close() })

	ccfg := hbone.ClientConfig{
		Bundles:     env.pki.bundles,
		Logger:      slog.New(slog.DiscardHandler),
		DialContext: dialIn(clientNS),
		ListenPacket: func() (net.PacketConn, error) {
			var pc *net.UDPConn
			if err := clientNS.Do(func() error {
				var err error
				pc, err = net.ListenUDP("udp4", nil)
				return err
			}); err != nil {
				return nil, err
			}
			return pc, nil
		},
	}
	env.transports = []lossyTransport{
		{name: "hbone-tcp", server: netip.MustParseAddrPort(ln.Addr().String()),
			newClient: func() (lossyClient, error) { return hbone.NewClient(ccfg) }},
		{name: "hbone-quic", server: netip.MustParseAddrPort(pc.LocalAddr().String()),
			newClient: func() (lossyClient, error) { return hbone.NewQUICClient(ccfg) }},
	}
	return env
}

// lossyLink joins the namespaces with an interface lossy0 in each,
// addressed clientIP and serverIP, whose packets are delayed by
// lossyDelay and dropped at lossyLoss each way, and says how: a veth pair
// with netem on both ends, or, if the kernel has no netem, TUN devices
// relayed by this process.
func lossyLink(b *testing.B, clientNS *inpodtest.NetNS, clientIP netip.Prefix, serverNS *inpodtest.NetNS, serverIP netip.Prefix) string {
	b.Helper()
	inpodtest.Veth(b, clientNS, "lossy0", clientIP, serverNS, "lossy0", serverIP)
	for _, ns := range []*inpodtest.NetNS{clientNS, serverNS} {
		// limit: netem's default queue of 1,000 packets would add drops of
		// its own beside the loss asked for.
		out, err := command("tc", "-n", ns.Name, "qdisc", "add", "dev", "lossy0", "root", "netem",
			"delay", lossyDelay, "loss", lossyLoss, "limit", "100000")
		if err != nil && strings.Contains(out, "qdisc kind is unknown") {
			progress("lossy path: this kernel has no netem; relaying through TUN devices instead")
			if out, err := command("ip", "-n", clientNS.Name, "link", "del", "lossy0"); err != nil {
				b.Fatalf("removing the veth pair: %v\n%s", err, out)
			}
			tunLink(b, clientNS, clientIP, serverNS, serverIP)
			return "TUN devices relayed in user space (the kernel has no netem)"
		}
		if err != nil {
			b.Fatalf("adding netem: %v\n%s", err, out)
		}
		// netem drops a GSO train whole, as one packet: TCP is held to one
		// segment per packet, and quic-go (which reads this variable when
		// it opens a socket) to no GSO.
		if out, err := command("ip", "-n", ns.Name, "link", "set", "dev", "lossy0", "gso_max_segs", "1"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
	b.Setenv("QUIC_GO_DISABLE_GSO", "true")
	return "veth pair with netem on both ends"
}

// cubic sets a TCP socket's congestion control to CUBIC, as quic-go's,
// whatever the machine's default (BBR, say, which takes random loss for
// no congestion: over 20 times the bulk throughput on this path). Accepted
// connections take their listener's.
func cubic(network, address string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "cubic")
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting TCP congestion control cubic: %w", serr)
	}
	return nil
}

func command(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// tunLink is lossyLink without netem: a TUN device lossy0 in each
// namespace, and this process relaying packets between them, each after
// lossyDelay and each dropped with lossyLoss's probability. A TUN device
// has no offloads, so every packet is relayed, and dropped, on its own.
func tunLink(b *testing.B, clientNS *inpodtest.NetNS, clientIP netip.Prefix, serverNS *inpodtest.NetNS, serverIP netip.Prefix) {
	b.Helper()
	delay, err := time.ParseDuration(lossyDelay)
	if err != nil {
		b.Fatal(err)
	}
	loss, err := strconv.ParseFloat(strings.TrimSuffix(lossyLoss, "%"), 64)
	if err != nil {
		b.Fatal(err)
	}
	loss /= 100
	var tuns []*os.File
	for _, side := range []struct {
		ns *inpodtest.NetNS
		ip netip.Prefix
	}{{clientNS, clientIP}, {serverNS, serverIP}} {
		f, err := openTUN(side.ns, "lossy0")
		if err != nil {
			b.Fatal(err)
		}
		tuns = append(tuns, f)
		for _, args := range [][]string{
			{"-n", side.ns.Name, "addr", "add", side.ip.String(), "dev", "lossy0"},
			{"-n", side.ns.Name, "link", "set", "dev", "lossy0", "up"},
		} {
			if out, err := command("ip", args...); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { relayLossy(tuns[0], tuns[1], delay, loss) })
	wg.Go(func() { relayLossy(tuns[1], tuns[0], delay, loss) })
	b.Cleanup(func() {
		for _, f := range tuns {
			f.Close()
		}
		wg.Wait()
	})
}

// openTUN creates the TUN device name in ns (IP packets, no header).
// The file is non-blocking, so that closing it ends a Read.
func openTUN(ns *inpodtest.NetNS, name string) (*os.File, error) {
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("creating TUN device %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun")
		return nil
	})
	return f, err
}

// relayLossy writes each packet read from from to to, delay later, unless
// it is dropped (with probability loss, or when more than a queue of
// them wait), until from is closed.
func relayLossy(from, to *os.File, delay time.Duration, loss float64) {
	type packet struct {
		data []byte
		due  time.Time
	}
	// Every packet waits the same delay: the queue stays in order.
	q := make(chan packet, 1<<16)
	go func() {
		defer close(q)
		buf := make([]byte, 1<<16)
		for {
			n, err := from.Read(buf)
			if err != nil {
				return
			}
			if rand.Float64() < loss {
				continue
			}
			select {
			case q <- packet{bytes.Clone(buf[:n]), time.Now().Add(delay)}:
			default:
			}
		}
	}()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			time.Sleep(d)
		}
		// A write fails only once the devices are going away.
		to.Write(p.data)
	}
}

func (e *lossyEnv) dial(ctx context.Context, c lossyClient, t lossyTransport, target netip.AddrPort) (net.Conn, error) {
	return c.Dial(ctx, &e.pki.client.TLS, t.server, target, []spiffeid.ID{e.pki.serverID}, nil)
}

// firstByte times a tunnel on a new connection from the dial until the
// tunnel is open, and until the first byte sent is echoed back.
func (e *lossyEnv) firstByte(ctx context.Context, t lossyTransport) (connect, first time.Duration, err error) {
	client, err := t.newClient()
	if err != nil {
		return 0, 0, err
	}
	defer client.Close()
	start := time.Now()
	c, err := e.dial(ctx, client, t, e.echo)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	connect = time.Since(start)
	if _, err := benchpeer.RoundTrips(c, 1, 1); err != nil {
		return 0, 0, err
	}
	return connect, time.Since(start), nil
}

// shared opens lossyStreams tunnels to the echo server on one client (one
// connection), times their round trips alone, then again while a bulk
// transfer runs on the same connection.
func (e *lossyEnv) shared(ctx context.Context, t lossyTransport, r *lossyResult) error {
	client, err := t.newClient()
	if err != nil {
		return err
	}
	defer client.Close()
	conns := make([]net.Conn, 0, lossyStreams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The first opens the connection; the others reuse it.
	for range lossyStreams {
		c, err := e.dial(ctx, client, t, e.echo)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	if r.aloneRTTs, err = roundTripsOn(conns); err != nil {
		return fmt.Errorf("alone: %w", err)
	}

	bulk, err := e.dial(ctx, client, t, e.sink)
	if err != nil {
		return err
	}
	defer bulk.Close()
	stop := make(chan struct{})
	warm := make(chan struct{})
	done := make(chan error, 1)
	var sent int64
	start := time.Now()
	go func() { done <- sendUntil(bulk, stop, warm, &sent) }()
	select {
	case <-warm:
	case err := <-done:
		return fmt.Errorf("bulk: %w", err)
	}
	r.bulkRTTs, err = roundTripsOn(conns)
	close(stop)
	if berr := <-done; berr != nil {
		return errors.Join(err, fmt.Errorf("bulk: %w", berr))
	}
	if err != nil {
		return fmt.Errorf("beside the bulk: %w", err)
	}
	r.bulkBytesPerSecond = float64(sent) / time.Since(start).Seconds()
	r.dialed = client.Stats().Dialed
	return nil
}

// roundTripsOn runs lossyRoundTrips round trips on every conn at once and
// returns them all.
func roundTripsOn(conns []net.Conn) ([]time.Duration, error) {
	var (
		mu   sync.Mutex
		all  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			rtts, err := benchpeer.RoundTrips(c, lossyMsg, lossyRoundTrips)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, rtts...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return all, errors.Join(errs...)
}

// sendUntil writes to a sink's tunnel until stop is closed, closing warm
// once lossyBulkWarmup bytes are written, then half-closes it and checks
// the sink's count. *sent is final when it returns.
func sendUntil(c net.Conn, stop, warm chan struct{}, sent *int64) error {
	buf := make([]byte, bulkChunk)
	for warmed := false; ; {
		select {
		case <-stop:
			return finishBulk(c, *sent)
		default:
		}
		n, err := c.Write(buf)
		*sent += int64(n)
		if err != nil {
			return err
		}
		if !warmed && *sent >= lossyBulkWarmup {
			warmed = true
			close(warm)
		}
	}
}

// finishBulk half-closes a sink's tunnel and checks the sink's count.
func finishBulk(c net.Conn, sent int64) error {
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("reading the sink's count: %w", err)
	}
	if g := int64(binary.BigEndian.Uint64(got[:])); g != sent {
		return &benchpeer.CountError{Sent: sent, Received: g}
	}
	return nil
}

func printLossy(link string, ts []lossyTransport, res map[string]*lossyResult) {
	tcp, quic := res["hbone-tcp"], res["hbone-quic"]
	fmt.Println()
	fmt.Printf("HBONE on a lossy path: two network namespaces, delay %s and loss %s each way (10 ms RTT)\n", lossyDelay, lossyLoss)
	fmt.Printf("%-44s %10s %10s %9s\n", "", ts[0].name, ts[1].name, "quic/tcp")
	row := func(name string, f func(*lossyResult) float64) {
		t, q := f(tcp), f(quic)
		fmt.Printf("%-44s %10.1f %10.1f %9.2f\n", name, t, q, q/t)
	}
	pct := func(ds func(*lossyResult) []time.Duration, p float64) func(*lossyResult) float64 {
		return func(r *lossyResult) float64 { return ms(benchpeer.Percentile(ds(r), p)) }
	}
	connect := func(r *lossyResult) []time.Duration { return r.connect }
	ttfb := func(r *lossyResult) []time.Duration { return r.ttfb }
	alone := func(r *lossyResult) []time.Duration { return r.aloneRTTs }
	withBulk := func(r *lossyResult) []time.Duration { return r.bulkRTTs }
	row(fmt.Sprintf("new connection, tunnel open p50 ms (n=%d)", lossyNewConns), pct(connect, 50))
	row(fmt.Sprintf("new connection, first byte p50 ms (n=%d)", lossyNewConns), pct(ttfb, 50))
	row(fmt.Sprintf("new connection, first byte p99 ms (n=%d)", lossyNewConns), pct(ttfb, 99))
	row(fmt.Sprintf("%d streams alone, round trip p50 ms", lossyStreams), pct(alone, 50))
	row(fmt.Sprintf("%d streams alone, round trip p99 ms", lossyStreams), pct(alone, 99))
	row(fmt.Sprintf("%d streams beside a bulk, round trip p50 ms", lossyStreams), pct(withBulk, 50))
	row(fmt.Sprintf("%d streams beside a bulk, round trip p99 ms", lossyStreams), pct(withBulk, 99))
	row("bulk beside the streams, MB/s", func(r *lossyResult) float64 { return r.bulkBytesPerSecond / 1e6 })
	fmt.Printf("%-44s %10d %10d\n", "connections the streams and the bulk shared", tcp.dialed, quic.dialed)
	fmt.Printf("each stream sends %d-byte requests, %d round trips alone and %d beside the bulk;\n", lossyMsg, lossyRoundTrips, lossyRoundTrips)
	fmt.Println("first byte: dial, CONNECT and one byte echoed, on a client with no connection;")
	fmt.Println("TCP's congestion control is cubic, as quic-go's.")
	fmt.Printf("the path: %s\n", link)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// progress reports what the benchmark is doing on stderr, apart from the
// results on stdout.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
