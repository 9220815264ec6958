package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/http1"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
	"github.com/skiffmesh/skiff/waypoint/internal/upstream"
)

// The tests run the whole request path for real on loopback: clients
// tunnel to the waypoint over HBONE (mutual TLS, HTTP/2 CONNECT) as
// ztunnel does, the waypoint tunnels to "destination ztunnels" (pkg/hbone
// servers on 127.77.x.y:15008, one per endpoint address), and those reach
// backends that are ordinary net/http servers.

const (
	testNS = "default"
	testTD = "cluster.local"
)

// testWindow is the flow-control window of the test's own clients,
// ztunnels and backends: small, so that what a test sees buffered in
// this process is mostly the waypoint's.
const testWindow = 256 << 10

// clientAddr is the client pod's address, as its ztunnel forwards it.
var clientAddr = netip.MustParseAddrPort("127.77.0.100:40000")

// testPKI issues certificates of one trust domain.
type testPKI struct {
	td      spiffeid.TrustDomain
	ca      *identity.CA
	bundles *identity.Bundles
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(testTD)
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{td: td, ca: ca, bundles: identity.NewBundles(ca.Bundle())}
}

func (p *testPKI) cert(t testing.TB, ns, sa string) (*tls.Certificate, spiffeid.ID) {
	t.Helper()
	id, err := identity.WorkloadID(p.td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := p.ca.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, id
}

// testMesh is a waypoint serving a configuration, with its clients.
type testMesh struct {
	t      testing.TB
	pki    *testPKI
	store  *meshstate.Store
	cfg    atomic.Pointer[config.Waypoint]
	px     *Proxy
	pool   *upstream.Pool
	addr   netip.AddrPort
	self   spiffeid.ID
	client *hbone.Client
	// the client workload (sleep) and its certificate
	clientCert *tls.Certificate
	clientID   spiffeid.ID
	access     *syncBuffer
	now        *fakeClock
	// metrics is the waypoint's Prometheus registry (scrape reads it).
	metrics *telemetry.Provider
}

// syncBuffer is a bytes.Buffer safe for the access log's writers, that
// tells waiters about each line.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	lines   int
	changed chan struct{} // closed and replaced at each write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines += bytes.Count(p, []byte("\n"))
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLines waits until the log holds n lines. The proxy writes a
// request's line once it is done with it: its outcome is reported to
// outlier detection, its metrics recorded.
func (s *syncBuffer) waitLines(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		if s.lines >= n {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d access log lines, waiting for %d: %w", s.lines, n, ctx.Err())
		}
	}
}

// fakeClock drives outlier detection.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// meshOptions tune newMesh.
type meshOptions struct {
	proxy   func(*Config)
	outlier outlier.Config
	budget  retry.BudgetConfig
	// quiet sends the waypoint's logs nowhere and its access log to a
	// writer that keeps nothing (benchmarks).
	quiet bool
}

// newMesh starts a waypoint for wp (namespace default, name waypoint) with
// the mesh state st.
func newMesh(t testing.TB, wp *waypointapi.Waypoint, st meshstate.Config, o meshOptions) *testMesh {
	t.Helper()
	m := &testMesh{t: t, pki: newPKI(t), access: &syncBuffer{}, now: &fakeClock{t: time.Unix(1_000_000, 0)}}
	m.store = meshstate.NewStore("istio-system", testTD)
	// The client, whose ztunnel forwards its address.
	st.Workloads = append(st.Workloads, &meshstate.Workload{
		UID: "uid-sleep", Name: "sleep", Namespace: testNS, ServiceAccount: "sleep", Healthy: true,
		Addresses: []netip.Addr{clientAddr.Addr()}, Protocol: meshstate.TunnelHBONE,
	})
	if err := m.store.Replace(st); err != nil {
		t.Fatalf("mesh state: %v", err)
	}
	m.store.SetLoaded()
	if wp.Name == "" {
		wp.Name, wp.Namespace = "waypoint", testNS
	}
	c, err := config.Compile(wp)
	if err != nil {
		t.Fatalf("compiling the waypoint resource: %v", err)
	}
	m.cfg.Store(c)
	wpCert, self := m.pki.cert(t, testNS, "waypoint")
	m.self = self
	m.clientCert, m.clientID = m.pki.cert(t, testNS, "sleep")

	// The waypoint's HBONE client and server gather writes (app.Run).
	hc, err := hbone.NewClient(hbone.ClientConfig{Bundles: m.pki.bundles, GatherWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	m.pool = upstream.New(upstream.Config{
		Tunnels:    &upstream.HBONE{Client: hc, Cert: func(context.Context) (*tls.Certificate, error) { return wpCert, nil }},
		NewH1:      func(c net.Conn) upstream.H1Conn { return http1.NewClientConn(c, http1.ClientConfig{}) },
		NoResponse: func(err error) bool { return errors.Is(err, http1.ErrNoResponse) },
	})
	t.Cleanup(m.pool.Close)
	oc := o.outlier
	if oc.Now == nil {
		oc.Now = m.now.Now
	}
	reg, err := balance.NewRegistry(oc)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := telemetry.NewProvider(telemetry.ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.metrics = prov
	rm, err := telemetry.NewRequestMetrics(prov.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := telemetry.NewTCPMetrics(prov.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	wm, err := telemetry.NewWaypointMetrics(prov.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	bc := o.budget
	if bc.Now == nil {
		// A frozen clock: every request and retry falls in one window,
		// so a test knows exactly what the budget allows.
		bc.Now = m.now.Now
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var access io.Writer = m.access
	if o.quiet {
		logger, access = slog.New(slog.DiscardHandler), io.Discard
	}
	pcfg := Config{
		Waypoint: m.cfg.Load,
		Mesh:     m.store,
		Self:     self,
		Upstream: m.pool,
		Balancer: reg,
		Budget: func() *retry.Budget {
			b, err := retry.NewBudget(bc)
			if err != nil {
				panic(err) // a test's meshOptions.budget is wrong
			}
			return b
		},
		Telemetry: &Telemetry{Requests: rm, TCP: tm, Waypoint: wm, AccessLog: slog.New(slog.NewTextHandler(access, nil)), Logger: logger},
		Logger:    logger,
	}
	if o.proxy != nil {
		o.proxy(&pcfg)
	}
	m.px, err = New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := hbone.NewServer(hbone.ServerConfig{
		TrustDomain:    m.pki.td,
		Bundles:        m.pki.bundles,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return wpCert, nil },
		Handler:        m.px,
		GatherWrites:   true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	m.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	t.Cleanup(func() {
		srv.Close()
		m.px.Close()
	})
	m.client, err = hbone.NewClient(hbone.ClientConfig{Bundles: m.pki.bundles, StreamWindow: testWindow, ConnWindow: 4 * testWindow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.client.Close() })
	return m
}

// testWriter sends the waypoint's own log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// tunnel opens an HBONE tunnel to the waypoint for authority, as the
// client's ztunnel does (forwarded names the client's address).
func (m *testMesh) tunnel(ctx context.Context, authority string) (net.Conn, error) {
	return m.tunnelAs(ctx, m.clientCert, authority)
}

// tunnelAs opens a tunnel presenting cert, the certificate of another
// client workload.
func (m *testMesh) tunnelAs(ctx context.Context, cert *tls.Certificate, authority string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(authority)
	if err != nil {
		return nil, err
	}
	h := http.Header{"Forwarded": {hbone.FormatForwarded(clientAddr)}}
	return m.client.Dial(ctx, cert, m.addr, ap, []spiffeid.ID{m.self}, h)
}

// rawRequest writes raw into a fresh tunnel made with cert (nil: the
// client's) and reads one response, whose body it returns read.
func (m *testMesh) rawRequest(cert *tls.Certificate, authority, raw string) (*http.Response, string) {
	m.t.Helper()
	if cert == nil {
		cert = m.clientCert
	}
	c, err := m.tunnelAs(m.t.Context(), cert, authority)
	if err != nil {
		m.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		m.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		m.t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		m.t.Fatalf("reading the body of the answer to %q: %v", raw, err)
	}
	return resp, string(b)
}

// http1Client sends HTTP/1.1 through the waypoint: a URL's host:port is
// the tunnel's authority (a service's cluster IP and port).
func (m *testMesh) http1Client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return m.tunnel(ctx, addr) },
			// Every request on a fresh connection unless a test says
			// otherwise: tests count endpoints' requests.
			DisableKeepAlives:  true,
			DisableCompression: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// http2Client sends HTTP/2 with prior knowledge through the waypoint.
func (m *testMesh) http2Client() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{
		Transport: &http.Transport{
			DialContext:        func(ctx context.Context, _, addr string) (net.Conn, error) { return m.tunnel(ctx, addr) },
			Protocols:          &p,
			HTTP2:              &http.HTTP2Config{MaxReceiveBufferPerStream: testWindow, MaxReceiveBufferPerConnection: 4 * testWindow},
			DisableCompression: true,
		},
		Timeout: 30 * time.Second,
	}
}

// endpoint is a backend pod: an HTTP server on addr (HTTP/1.1 and h2c),
// and, for mesh workloads, a destination ztunnel on addr's IP, port 15008,
// with the workload's identity.
type testEndpoint struct {
	name  string
	addr  netip.AddrPort
	id    spiffeid.ID
	hits  atomic.Int64
	peers chan spiffeid.ID // identities the ztunnel saw, if anyone reads them
	h     atomic.Pointer[http.Handler]
	// closed gets a value as each connection to the server closes, once
	// its handlers have returned (if no one reads, values are dropped).
	closed chan struct{}
	srv    *http.Server
	zt     *hbone.Server
}

// handle makes h the endpoint's handler from now on.
func (e *testEndpoint) handle(h http.HandlerFunc) {
	var hh http.Handler = h
	e.h.Store(&hh)
}

// startEndpoint serves h at addr. With sa set, the workload is in the mesh
// (HBONE); otherwise it is reached in plain TCP.
func (m *testMesh) startEndpoint(name, addr, sa string, h http.Handler) *testEndpoint {
	m.t.Helper()
	e := &testEndpoint{name: name, addr: netip.MustParseAddrPort(addr), peers: make(chan spiffeid.ID, 1024), closed: make(chan struct{}, 64)}
	e.h.Store(&h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	e.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.hits.Add(1)
			w.Header().Set("X-Endpoint", name)
			(*e.h.Load()).ServeHTTP(w, r)
		}),
		Protocols: &p,
		HTTP2:     &http.HTTP2Config{MaxReceiveBufferPerStream: testWindow, MaxReceiveBufferPerConnection: 4 * testWindow},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				select {
				case e.closed <- struct{}{}:
				default:
				}
			}
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		m.t.Fatalf("endpoint %s: %v", name, err)
	}
	go e.srv.Serve(ln)
	m.t.Cleanup(func() { e.srv.Close() })
	if sa == "" {
		return e
	}
	e.id, e.zt = m.startZtunnel(name, e.addr.Addr(), sa, e.peers)
	return e
}

// startZtunnel starts a destination ztunnel on ip:15008 with the identity
// of service account sa: it accepts tunnels and connects each to its
// authority in plain TCP, as a node's ztunnel delivers to a pod. The
// identities of the peers it sees go to peers (if not nil nor full).
func (m *testMesh) startZtunnel(name string, ip netip.Addr, sa string, peers chan spiffeid.ID) (spiffeid.ID, *hbone.Server) {
	m.t.Helper()
	cert, id := m.pki.cert(m.t, testNS, sa)
	zt, err := hbone.NewServer(hbone.ServerConfig{
		StreamWindow:   testWindow,
		ConnWindow:     4 * testWindow,
		TrustDomain:    m.pki.td,
		Bundles:        m.pki.bundles,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil },
		Handler: hbone.HandlerFunc(func(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
			select {
			case peers <- r.Peer:
			default:
			}
			up, err := net.Dial("tcp", r.Authority.String())
			if err != nil {
				w.Refuse(http.StatusServiceUnavailable)
				return
			}
			c, err := w.Accept()
			if err != nil {
				up.Close()
				return
			}
			hbone.Splice(ctx, c, up)
			up.Close()
		}),
	})
	if err != nil {
		m.t.Fatal(err)
	}
	zln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 15008).String())
	if err != nil {
		m.t.Fatalf("endpoint %s ztunnel: %v", name, err)
	}
	go zt.Serve(zln)
	m.t.Cleanup(func() { zt.Close() })
	return id, zt
}

// workload is the mesh-state entry of an endpoint backing service
// (hostname) port servicePort.
func workload(name, addr, sa, hostname string, servicePort uint16) *meshstate.Workload {
	ap := netip.MustParseAddrPort(addr)
	w := &meshstate.Workload{
		UID: "uid-" + name, Name: name, Namespace: testNS, ServiceAccount: sa, Healthy: true,
		Addresses: []netip.Addr{ap.Addr()},
		Services:  map[string][]meshstate.Port{testNS + "/" + hostname: {{ServicePort: servicePort, TargetPort: ap.Port()}}},
	}
	if sa != "" {
		w.Protocol = meshstate.TunnelHBONE
	} else {
		w.ServiceAccount = "default"
	}
	return w
}

// service is the mesh-state entry of a service.
func service(name, vip string, port, target uint16) *meshstate.Service {
	return &meshstate.Service{
		Name: name, Namespace: testNS, Hostname: hostname(name),
		Addresses: []netip.Addr{netip.MustParseAddr(vip)},
		Ports:     []meshstate.Port{{ServicePort: port, TargetPort: target}},
	}
}

func hostname(name string) string { return name + "." + testNS + ".svc.cluster.local" }

// wpService is the waypoint resource's entry for a service.
func wpService(name, vip string, port, target uint32, appProtocol string) *waypointapi.Service {
	return &waypointapi.Service{
		Name: name, Namespace: testNS, Hostname: hostname(name),
		Vips:  [][]byte{netip.MustParseAddr(vip).AsSlice()},
		Ports: []*waypointapi.ServicePort{{Name: "http", Port: port, TargetPort: target, AppProtocol: appProtocol}},
	}
}

// scrape returns the waypoint's metrics in the Prometheus text format.
func (m *testMesh) scrape() string {
	m.t.Helper()
	rr := httptest.NewRecorder()
	m.metrics.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if rr.Code != 200 {
		m.t.Fatalf("scraping metrics: %d", rr.Code)
	}
	return rr.Body.String()
}

// readAll reads a response body and closes it.
func readAll(t testing.TB, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// backendRef is a route backend: service name (in testNS) on port 80.
func backendRef(name string, weight uint32) *waypointapi.BackendRef {
	return &waypointapi.BackendRef{Name: name, Namespace: testNS, Hostname: hostname(name), Port: 80, Weight: weight}
}

// backendServices adds to st one service per name, each with one HBONE
// endpoint at the matching address (port 8080), and returns st.
func backendServices(st meshstate.Config, names []string, vips, addrs []string) meshstate.Config {
	for i, name := range names {
		st.Services = append(st.Services, service(name, vips[i], 80, 8080))
		st.Workloads = append(st.Workloads, workload(name, addrs[i], "echo", hostname(name), 80))
	}
	return st
}

// get sends a request through the waypoint and returns the status, the
// body and the endpoint that answered.
func (m *testMesh) do(c *http.Client, req *http.Request) (*http.Response, string) {
	m.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return resp, readAll(m.t, resp.Body)
}

func fmtSscan(s string, v *float64) (int, error) { return fmt.Sscan(s, v) }

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// setWaypoint compiles wp and makes it the waypoint's configuration.
func (m *testMesh) setWaypoint(wp *waypointapi.Waypoint) {
	m.t.Helper()
	if wp.Name == "" {
		wp.Name, wp.Namespace = "waypoint", testNS
	}
	c, err := config.Compile(wp)
	if err != nil {
		m.t.Fatalf("compiling the waypoint resource: %v", err)
	}
	m.cfg.Store(c)
}
