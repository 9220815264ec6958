package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
)

// BenchmarkWaypoint puts one nginx origin serving 1 KiB (and 1 GiB)
// behind the waypoint, HAProxy and nginx, each pinned to CPU 0 with one
// worker, and drives every path from the other CPU (h2load at
// saturation, an open-loop Go client at the fixed rate), for HTTP/1.1
// keep-alive and for HTTP/2:
//
//	waypoint:     h2load → client shim ⇒ waypoint ⇒ destination shim → origin
//	l4-mesh:      h2load → client shim ⇒ destination shim → origin
//	haproxy-tls:  h2load ⇒ haproxy ⇒ origin       (and nginx-tls alike)
//	haproxy:      h2load → haproxy → origin       (and nginx alike)
//	direct:       h2load → origin
//
// (⇒ is mutual TLS and HBONE for the waypoint, TLS 1.3 for the peers.)
// The shims stand in for the client's and the destination's ztunnels:
// they run in a process of their own on the load CPU, so CPU 0 does only
// the waypoint's work, and their CPU is reported apart. l4-mesh is the
// same shims without the waypoint, the mesh at L4: the latency the
// waypoint adds is its difference to that path, as well as to direct.
// For each path it measures requests/s at saturation, the proxy's CPU
// per request, p50 and p99 at a fixed 1,000 requests/s (and the proxy's
// CPU then), and RSS idle, at saturation and during a 1 GiB response;
// rounds take turns and figures are medians. It prints a table, the
// waypoint's ratios to HAProxy and nginx, and issue 11's targets
// (informational: timings never fail it). The waypoint is also measured, as
// waypoint+rl and waypoint+grl, serving the same origin under one local
// and one global rate limit (envoyproxy/ratelimit and Redis on the load
// CPUs) that no request exceeds: the limiter's cost per request and the
// global check's latency, from end to end, from the waypoint's histogram
// of its calls, and for the service alone (a plain gRPC client). Run it
// with `make bench-waypoint`; set SKIFF_BENCH_PROFILE to a directory to
// get CPU profiles of the waypoint at saturation and at the fixed rate,
// per waypoint path and protocol (with SKIFF_BENCH_TRACE=1, a runtime
// trace at the fixed rate instead of its CPU profile). A -bench pattern
// that picks some paths, say
// '^BenchmarkWaypoint$/h2/(waypoint|haproxy-tls)$/', prints only their
// medians.
func BenchmarkWaypoint(b *testing.B) {
	w := newWorld(b)
	samples := map[key][]sample{}
	for round := 1; round <= rounds; round++ {
		for _, pr := range protocols {
			for _, p := range w.paths {
				ok := b.Run(fmt.Sprintf("%s/%s/round-%d", pr.name, p.name, round), func(b *testing.B) {
					s := w.measure(b, p, pr, round == 1)
					samples[key{p.name, pr.name}] = append(samples[key{p.name, pr.name}], s)
					b.ReportMetric(s.rps, "req/s")
					b.ReportMetric(s.cpuPerReq, "µs-CPU/req")
					b.ReportMetric(float64(s.p99.Microseconds()), "p99-µs@1k")
					b.ReportMetric(s.vcpu, "vCPU@1k")
				})
				if !ok {
					b.FailNow() // the table needs every path
				}
			}
		}
	}
	res := map[key]*result{}
	for k, ss := range samples {
		res[k] = summarize(ss)
	}
	// One 1 GiB response per proxy: memory while a large body streams.
	// Not direct: it has no proxy, and nginx takes h2load's many small
	// HTTP/2 WINDOW_UPDATEs for a flood and drops the connection.
	for _, pr := range protocols {
		for _, p := range w.paths {
			if p.proxy == nil || p.variant {
				continue
			}
			r := res[key{p.name, pr.name}]
			if r == nil {
				continue // filtered out by -bench
			}
			if !b.Run(fmt.Sprintf("%s/%s/1GiB", pr.name, p.name), func(b *testing.B) { w.measureBulk(b, p, pr, r) }) {
				b.FailNow()
			}
		}
	}
	if len(res) < len(protocols)*len(w.paths) {
		w.printPartial(res)
		return
	}
	w.print(res)
}

const (
	rounds      = 3
	warmUpReqs  = 20000
	saturateFor = 5 * time.Second
	// The fixed rate: rateClients connections at ratePerClient each.
	rateClients   = 10
	ratePerClient = 100
	rateFor       = 10 * time.Second
	rateWarmUp    = time.Second
	// rlsAloneFor times the rate-limit service alone, at the fixed rate.
	rlsAloneFor = 5 * time.Second
	bulkSize    = 1 << 30
	trustDomain = "cluster.local"
	// endpointIP is the origin's address: the destination shim listens
	// on its port 15008, as a destination ztunnel does.
	endpointIP = "127.0.0.2"
	// The services' cluster IPs: only ever an HBONE authority, never
	// dialed (loopback all the same, in case).
	vipH1 = "127.0.10.1"
	vipH2 = "127.0.10.2"
	// The same origin as services with one local (RL) or global (GRL)
	// rate limit that every request stays under.
	vipH1RL  = "127.0.10.3"
	vipH2RL  = "127.0.10.4"
	vipH1GRL = "127.0.10.5"
	vipH2GRL = "127.0.10.6"
	// shimsEnv carries the shims' configuration to the helper process.
	shimsEnv = "SKIFF_WAYPOINT_BENCH_SHIMS"
	// profileEnv names a directory for CPU profiles of the waypoint.
	profileEnv = "SKIFF_BENCH_PROFILE"
	// traceEnv, set to 1 with profileEnv, takes a runtime trace (go tool
	// trace) of the waypoint at the fixed rate instead of a CPU profile.
	traceEnv = "SKIFF_BENCH_TRACE"
)

// protocol is how h2load talks to a path.
type protocol struct {
	name             string
	http1            bool
	clients, streams int
}

var protocols = []protocol{
	{name: "h1", http1: true, clients: 32, streams: 1},
	{name: "h2", clients: 16, streams: 8},
}

// path is one way from h2load to the origin.
type path struct {
	name string
	// url is the base URL per protocol name ("http://127.0.0.1:p").
	url map[string]string
	// proxy lists the processes whose CPU and memory the path costs
	// (nil for direct); shims the waypoint's helper processes.
	proxy, shims func() []int
	idleRSS      int64
	note         string
	// variant marks the waypoint with rate limits: the same process as
	// "waypoint", measured for the limiter's cost only.
	variant bool
}

type key struct{ path, proto string }

// sample is one round's figures for a path and protocol.
type sample struct {
	rps         float64 // requests/s at saturation
	cpuPerReq   float64 // µs of the proxy's CPU per request at saturation
	shimsPerReq float64
	satRSS      int64
	p50, p99    time.Duration // at the fixed rate
	vcpu        float64       // the proxy's CPU at the fixed rate
	shimsVCPU   float64
	// others is the share of the proxy's CPU that other processes took
	// at saturation and at the fixed rate: 0 on a quiet machine.
	othersSat, othersRate float64
	requestsDone          int64
	// For waypoint+grl, the waypoint's calls to the rate-limit service
	// at the fixed rate: their p99 in seconds, and the share done within
	// 1 ms.
	callP99, callsWithin1ms float64
}

// result is the median of a path's samples, and the 1 GiB figures.
type result struct {
	sample
	bulkBefore, bulkPeak int64
	bulkMBps             float64
}

func summarize(ss []sample) *result {
	med := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	return &result{sample: sample{
		rps:            med(func(s sample) float64 { return s.rps }),
		cpuPerReq:      med(func(s sample) float64 { return s.cpuPerReq }),
		shimsPerReq:    med(func(s sample) float64 { return s.shimsPerReq }),
		satRSS:         int64(med(func(s sample) float64 { return float64(s.satRSS) })),
		p50:            time.Duration(med(func(s sample) float64 { return float64(s.p50) })),
		p99:            time.Duration(med(func(s sample) float64 { return float64(s.p99) })),
		vcpu:           med(func(s sample) float64 { return s.vcpu }),
		shimsVCPU:      med(func(s sample) float64 { return s.shimsVCPU }),
		othersSat:      med(func(s sample) float64 { return s.othersSat }),
		othersRate:     med(func(s sample) float64 { return s.othersRate }),
		callP99:        med(func(s sample) float64 { return s.callP99 }),
		callsWithin1ms: med(func(s sample) float64 { return s.callsWithin1ms }),
	}}
}

// world is everything the paths need, started once for the whole run.
type world struct {
	dir string
	// proxyCPU runs the proxy under test; load (a taskset CPU list)
	// everything else.
	proxyCPU   int
	load       string
	paths      []path
	profileDir string
	adminAddr  string // the waypoint's, when profiling
	// metricsAddr serves the waypoint's metrics: the global limit's
	// calls are timed from its histogram.
	metricsAddr string
	// rlsP50 and rlsP99 are the rate-limit service's own latency, asked
	// from the load CPU at the fixed rate with nothing else running.
	rlsP50, rlsP99 time.Duration
	loadStart      string // the load average when the run began
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-waypoint: "+format+"\n", args...)
}

func newWorld(b *testing.B) *world {
	for _, bin := range []string{"nginx", "haproxy", "h2load", "taskset", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not found (make bench-waypoint installs nginx-light, haproxy and nghttp2-client; the waypoint is built with go)", bin)
		}
	}
	n := runtime.NumCPU()
	if n < 2 {
		b.Skip("needs two CPUs: one for the proxy, one for the load")
	}
	w := &world{dir: b.TempDir(), proxyCPU: 0, load: "1", profileDir: os.Getenv(profileEnv)}
	if n > 2 {
		w.load = fmt.Sprintf("1-%d", n-1)
	}
	w.loadStart = loadAverage()
	// This process only orchestrates and samples, but it must not take
	// the proxy's CPU either: pin every thread of it.
	if out, err := exec.Command("taskset", "-a", "-p", "-c", w.load, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		b.Fatalf("pinning the benchmark to CPUs %s: %v\n%s", w.load, err, out)
	}
	ctx := b.Context()
	sub := func(name string) string {
		d := filepath.Join(w.dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			b.Fatal(err)
		}
		return d
	}
	port := func(ip string) int {
		p, err := benchpeer.FreePort(ip)
		if err != nil {
			b.Fatalf("no free port on %s (is %s a loopback address here?): %v", ip, ip, err)
		}
		return p
	}
	hostPort := func(ip string, p int) string { return net.JoinHostPort(ip, strconv.Itoa(p)) }
	keep := func(p *benchpeer.Proc, err error) *benchpeer.Proc {
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}

	progress("starting the origin (nginx) on %s", endpointIP)
	cert, err := benchpeer.WriteServerCert(w.dir, "127.0.0.1", endpointIP)
	if err != nil {
		b.Fatal(err)
	}
	origin := benchpeer.Origin{
		Dir: sub("origin"), CPUs: w.load, TLS: &cert,
		H1Listen:  hostPort(endpointIP, port(endpointIP)),
		H2Listen:  hostPort(endpointIP, port(endpointIP)),
		TLSListen: hostPort(endpointIP, port(endpointIP)),
		Files:     map[string]int64{"1k": 1024, "1g": bulkSize},
	}
	keep(benchpeer.StartNginxOrigin(ctx, origin))

	progress("starting Envoy's rate-limit service (envoyproxy/ratelimit) and Redis")
	rls, err := benchpeer.StartRateLimitService(ctx, benchpeer.RateLimitService{
		Dir: sub("ratelimit"), CPUs: w.load, Configs: map[string]string{"skiff": "domain: skiff\n"},
	})
	if err != nil {
		b.Fatalf("rate-limit service: %v", err)
	}
	b.Cleanup(func() { rls.Close() })
	progress("the rate-limit service alone: %d calls/s for %v", rateClients*ratePerClient, rlsAloneFor)
	lat, err := rls.Latencies(ctx, "skiff", rateClients*ratePerClient, rlsAloneFor)
	if err != nil {
		b.Fatalf("rate-limit service alone: %v", err)
	}
	w.rlsP50, w.rlsP99 = benchpeer.Percentile(lat, 50), benchpeer.Percentile(lat, 99)

	progress("building and starting the waypoint")
	wp := w.startWaypoint(b, origin, rls.Addr)
	progress("starting the HBONE shims")
	shims := w.startShims(b, wp.hboneAddr, origin)
	waypointPath := func(name, suffix, note string) path {
		return path{
			name: name, url: map[string]string{"h1": "http://" + shims.Listen["h1"+suffix], "h2": "http://" + shims.Listen["h2"+suffix]},
			proxy: func() []int { return []int{wp.pid} }, shims: func() []int { return []int{shims.pid} },
			idleRSS: wp.idleRSS, note: note, variant: suffix != "",
		}
	}
	w.paths = append(w.paths,
		waypointPath("waypoint", "", "HBONE (mTLS, HTTP/2 CONNECT) on both legs"),
		waypointPath("waypoint+rl", "-rl", "the waypoint, every request under one local rate limit (a bucket per client identity)"),
		waypointPath("waypoint+grl", "-grl", "the waypoint, every request under one global rate limit (envoyproxy/ratelimit and Redis on the load CPU)"),
		path{
			name: "l4-mesh", url: map[string]string{"h1": "http://" + shims.Listen["h1-l4"], "h2": "http://" + shims.Listen["h2-l4"]},
			note: "the shims alone, HBONE from the client shim to the destination shim: the mesh without a waypoint",
		},
	)

	progress("starting HAProxy and nginx")
	for _, tlsMode := range []bool{true, false} {
		for _, name := range []string{"haproxy", "nginx"} {
			c := benchpeer.L7Proxy{
				CPUs: strconv.Itoa(w.proxyCPU), H1Listen: hostPort("127.0.0.1", port("127.0.0.1")), H2Listen: hostPort("127.0.0.1", port("127.0.0.1")),
				H1Origin: origin.H1Listen, H2Origin: origin.H2Listen,
			}
			pname, scheme, note := name, "http", "plaintext on both legs"
			if tlsMode {
				c.TLS, c.H1Origin, c.H2Origin = &cert, origin.TLSListen, origin.TLSListen
				pname, scheme, note = name+"-tls", "https", "TLS 1.3 on both legs"
			}
			if name == "nginx" {
				note += "; HTTP/1.1 to the origin"
			}
			c.Dir = sub(pname)
			start := benchpeer.StartHAProxy
			if name == "nginx" {
				start = benchpeer.StartNginxProxy
			}
			p := keep(start(ctx, c))
			w.paths = append(w.paths, path{
				name: pname, url: map[string]string{"h1": scheme + "://" + c.H1Listen, "h2": scheme + "://" + c.H2Listen},
				proxy: p.PIDs, idleRSS: benchpeer.TotalRSS(p.PIDs()), note: note,
			})
		}
	}
	w.paths = append(w.paths, path{
		name: "direct", url: map[string]string{"h1": "http://" + origin.H1Listen, "h2": "http://" + origin.H2Listen},
		note: "h2load to the origin",
	})

	// Every path answers before anything is measured.
	for _, p := range w.paths {
		for _, pr := range protocols {
			h := w.h2load(pr, p.url[pr.name]+"/1k")
			h.Requests = 2 * pr.clients
			if _, err := h.Run(ctx); err != nil {
				b.Fatalf("%s %s does not work: %v", p.name, pr.name, err)
			}
		}
	}
	return w
}

// h2load is a run of h2load from the load CPUs with pr's connections.
func (w *world) h2load(pr protocol, url string) benchpeer.H2Load {
	return benchpeer.H2Load{URL: url, HTTP1: pr.http1, Clients: pr.clients, Streams: pr.streams, CPUs: w.load, Dir: w.dir}
}

// waypointProc is the running waypoint.
type waypointProc struct {
	pid       int
	hboneAddr string
	idleRSS   int64
}

// startWaypoint builds the waypoint binary and runs it in local mode,
// pinned to the proxy CPU, serving services whose one endpoint is the
// origin: echo-h1 (appProtocol http, HTTP/1.1 to the origin) and echo-h2
// (appProtocol http2, HTTP/2 to the origin), and the same again with a
// local (-rl) and a global (-grl) rate limit, the global one asked of
// rateLimitService.
func (w *world) startWaypoint(b *testing.B, origin benchpeer.Origin, rateLimitService string) *waypointProc {
	dir := filepath.Join(w.dir, "waypoint")
	if err := os.Mkdir(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, "waypoint")
	if out, err := exec.CommandContext(b.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("building the waypoint: %v\n%s", err, out)
	}
	// The CA's files, written the way identity.NewCA loads them back.
	caDir := filepath.Join(w.dir, "ca")
	if _, err := identity.NewCA(identity.CAOptions{TrustDomain: spiffeid.RequireTrustDomainFromString(trustDomain), Dir: caDir, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		b.Fatal(err)
	}
	_, h1Port, _ := net.SplitHostPort(origin.H1Listen)
	_, h2Port, _ := net.SplitHostPort(origin.H2Listen)
	cfgPath := filepath.Join(dir, "waypoint.yaml")
	if err := os.WriteFile(cfgPath, []byte(waypointConfig(h1Port, h2Port)), 0o600); err != nil {
		b.Fatal(err)
	}
	free := func() string {
		p, err := benchpeer.FreePort("127.0.0.1")
		if err != nil {
			b.Fatal(err)
		}
		return "127.0.0.1:" + strconv.Itoa(p)
	}
	hboneAddr, readyAddr := free(), free()
	w.metricsAddr = free()
	if w.profileDir != "" {
		w.adminAddr = free()
	}
	args := []string{
		"--waypoint=default/waypoint", "--local-config=" + cfgPath,
		"--ca-cert=" + filepath.Join(caDir, "ca-cert.pem"), "--ca-key=" + filepath.Join(caDir, "ca-key.pem"),
		"--hbone-addr=" + hboneAddr, "--admin-addr=" + w.adminAddr, "--metrics-addr=" + w.metricsAddr, "--readiness-addr=" + readyAddr,
		"--access-log=false", "--worker-threads=1", "--log-level=warn",
		"--rate-limit-service=" + rateLimitService,
	}
	logPath := filepath.Join(dir, "waypoint.log")
	log, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cmd := benchpeer.Command(b.Context(), strconv.Itoa(w.proxyCPU), bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := benchpeer.StartProc("waypoint", cmd)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := waitReady(b.Context(), p, "http://"+readyAddr+"/healthz/ready"); err != nil {
		out, _ := os.ReadFile(logPath)
		b.Fatalf("waypoint not ready: %v\n%s", err, out)
	}
	return &waypointProc{pid: p.PID(), hboneAddr: hboneAddr, idleRSS: benchpeer.TotalRSS([]int{p.PID()})}
}

// waypointConfig is the waypoint's local file: the client and the
// origin's workload, the services, and the waypoint resource.
func waypointConfig(h1Port, h2Port string) string {
	var services, waypointServices, backendServices strings.Builder
	for _, svc := range []struct {
		name, vip, port, appProtocol, limit string
	}{
		{"echo-h1", vipH1, h1Port, "http", ""},
		{"echo-h2", vipH2, h2Port, "http2", ""},
		{"echo-h1-rl", vipH1RL, h1Port, "http", "LOCAL"},
		{"echo-h2-rl", vipH2RL, h2Port, "http2", "LOCAL"},
		{"echo-h1-grl", vipH1GRL, h1Port, "http", "GLOBAL"},
		{"echo-h2-grl", vipH2GRL, h2Port, "http2", "GLOBAL"},
	} {
		fmt.Fprintf(&backendServices, "    default/%s.default.svc.cluster.local: [{servicePort: 80, targetPort: %s}]\n", svc.name, svc.port)
		fmt.Fprintf(&services, "- {name: %s, namespace: default, addresses: [%s], ports: [{servicePort: 80, targetPort: %s}]}\n", svc.name, svc.vip, svc.port)
		fmt.Fprintf(&waypointServices, `  - name: %[1]s
    namespace: default
    hostname: %[1]s.default.svc.cluster.local
    vips: [%[2]s]
    ports: [{port: 80, targetPort: %[3]s, appProtocol: %[4]s}]
`, svc.name, svc.vip, svc.port, svc.appProtocol)
		if svc.limit != "" {
			// A billion a second: never reached, so every request pays
			// for the check and none is refused.
			fmt.Fprintf(&waypointServices, "    rateLimits: [{policy: default/bench, requests: 1000000000, fillIntervalMs: 1000, burst: 1000000000, key: {type: SOURCE_IDENTITY}, mode: %s}]\n", svc.limit)
		}
	}
	return fmt.Sprintf(`workloads:
- name: client
  namespace: default
  serviceAccount: client
  addresses: [127.0.0.1]
- name: backend
  namespace: default
  serviceAccount: backend
  addresses: [%s]
  protocol: HBONE
  services:
%sservices:
%swaypoint:
  name: waypoint
  namespace: default
  trustDomain: %s
  services:
%s`, endpointIP, backendServices.String(), services.String(), trustDomain, waypointServices.String())
}

// waitReady polls url until it answers 200, the process exits, or a
// minute passes.
func waitReady(ctx context.Context, p *benchpeer.Proc, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		if err := p.Err(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-p.Exited():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// shimConfig is what the shims' process needs, passed as JSON in
// shimsEnv.
type shimConfig struct {
	CADir    string
	Waypoint string // the waypoint's HBONE address
	// Endpoint is the origin's address: the destination shim serves its
	// port 15008 and forwards only there.
	Endpoint string
	// VIPs maps a name (protocol, and variant) to the service address
	// its client shim asks the waypoint for.
	VIPs map[string]string
	// Direct maps a name to an origin address its client shim tunnels to
	// through the destination shim alone, as ztunnel does for a service
	// without a waypoint.
	Direct map[string]string
}

// shimsProc is the running shims' process and its client listeners.
type shimsProc struct {
	pid int
	// Listen maps a name of shimConfig.VIPs to its client listener.
	Listen map[string]string
}

// startShims runs this test binary again as the shims (see
// TestWaypointBenchShims), pinned to the load CPUs, and reads the
// addresses of its client listeners.
func (w *world) startShims(b *testing.B, waypointAddr string, origin benchpeer.Origin) *shimsProc {
	cfg := shimConfig{
		CADir: filepath.Join(w.dir, "ca"), Waypoint: waypointAddr, Endpoint: endpointIP,
		VIPs: map[string]string{
			"h1": vipH1 + ":80", "h2": vipH2 + ":80",
			"h1-rl": vipH1RL + ":80", "h2-rl": vipH2RL + ":80",
			"h1-grl": vipH1GRL + ":80", "h2-grl": vipH2GRL + ":80",
		},
		Direct: map[string]string{"h1-l4": origin.H1Listen, "h2-l4": origin.H2Listen},
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	cmd := benchpeer.Command(b.Context(), w.load, os.Args[0], "-test.run=^TestWaypointBenchShims$")
	cmd.Env = append(os.Environ(), shimsEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	// The shims live until their stdin closes: they never outlive this
	// process, even if it is killed.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	p, err := benchpeer.StartProc("shims", cmd)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); p.Close() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("shims did not start: %v (%v)", err, p.Err())
	}
	s := &shimsProc{pid: p.PID()}
	if err := json.Unmarshal([]byte(line), &s.Listen); err != nil || len(s.Listen) != len(cfg.VIPs)+len(cfg.Direct) {
		b.Fatalf("shims said %q: %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	return s
}

// TestWaypointBenchShims is BenchmarkWaypoint's helper process, not a
// test: run with shimsEnv set, it serves as the ztunnels on the
// waypoint's two sides until its standard input closes, and skips
// otherwise.
func TestWaypointBenchShims(t *testing.T) {
	raw := os.Getenv(shimsEnv)
	if raw == "" {
		t.Skip("the shims' process of BenchmarkWaypoint")
	}
	var cfg shimConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("%s: %v", shimsEnv, err)
	}
	if err := runShims(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "shims:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runShims serves both shims until stdin closes:
//   - the client shim, a source ztunnel's outbound: plain TCP in on a
//     loopback port per protocol and variant, a tunnel out to the waypoint
//     (HBONE, authority the service's address), or for cfg.Direct to the
//     destination shim (authority the origin's address), presenting the
//     client's identity;
//   - the destination shim, the endpoint's ztunnel: HBONE in on
//     <endpoint>:15008 presenting the origin's identity, from the
//     waypoint's or the client's identity only, to the endpoint's own
//     address only.
func runShims(cfg shimConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: td, Dir: cfg.CADir, Logger: logger})
	if err != nil {
		return fmt.Errorf("loading the CA: %w", err)
	}
	bundles := identity.NewBundles(ca.Bundle())
	clientCert, clientID, err := issue(ca, "client")
	if err != nil {
		return err
	}
	originCert, originID, err := issue(ca, "backend")
	if err != nil {
		return err
	}
	waypointID, err := identity.WorkloadID(td, "default", "waypoint")
	if err != nil {
		return err
	}
	endpoint, err := netip.ParseAddr(cfg.Endpoint)
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	waypointAddr, err := netip.ParseAddrPort(cfg.Waypoint)
	if err != nil {
		return fmt.Errorf("waypoint address: %w", err)
	}

	dest, err := hbone.NewServer(hbone.ServerConfig{
		TrustDomain: td, Bundles: bundles, Logger: logger,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return originCert, nil },
		Handler: hbone.HandlerFunc(func(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
			if (r.Peer != waypointID && r.Peer != clientID) || r.Authority.Addr() != endpoint {
				w.Refuse(http.StatusForbidden)
				return
			}
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp", r.Authority.String())
			if err != nil {
				w.Refuse(http.StatusServiceUnavailable)
				return
			}
			defer up.Close()
			c, err := w.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			hbone.Splice(ctx, c, up)
		}),
	})
	if err != nil {
		return err
	}
	destLn, err := net.Listen("tcp", netip.AddrPortFrom(endpoint, 15008).String())
	if err != nil {
		return fmt.Errorf("destination shim: %w", err)
	}
	go dest.Serve(destLn)
	defer dest.Close()

	client, err := hbone.NewClient(hbone.ClientConfig{Bundles: bundles, Logger: logger})
	if err != nil {
		return err
	}
	defer client.Close()
	// Each client listener tunnels to a peer (the waypoint, or the
	// destination shim) for an authority, and expects the peer's identity.
	type route struct {
		peer      netip.AddrPort
		authority string
		want      spiffeid.ID
	}
	routes := map[string]route{}
	for name, vip := range cfg.VIPs {
		routes[name] = route{waypointAddr, vip, waypointID}
	}
	for name, addr := range cfg.Direct {
		routes[name] = route{netip.AddrPortFrom(endpoint, 15008), addr, originID}
	}
	addrs := map[string]string{}
	for name, rt := range routes {
		authority, err := netip.ParseAddrPort(rt.authority)
		if err != nil {
			return fmt.Errorf("%s: authority: %w", name, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		addrs[name] = ln.Addr().String()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					t, err := client.Dial(ctx, clientCert, rt.peer, authority, []spiffeid.ID{rt.want}, nil)
					if err != nil {
						logger.Warn("client shim: tunnel", "to", rt.peer, "err", err)
						return
					}
					defer t.Close()
					hbone.Splice(ctx, c, t)
				}()
			}
		}()
	}
	line, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", line)
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// issue signs a certificate for service account sa in namespace default.
func issue(ca *identity.CA, sa string) (*tls.Certificate, spiffeid.ID, error) {
	id, err := identity.WorkloadID(ca.TrustDomain(), "default", sa)
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, id, err
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		return nil, id, err
	}
	chain, err := ca.Sign(csr, id, 24*time.Hour)
	if err != nil {
		return nil, id, fmt.Errorf("signing %s: %w", id, err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, id, nil
}

// pidsOf returns f's processes; none for a nil f.
func pidsOf(f func() []int) []int {
	if f == nil {
		return nil
	}
	return f()
}

// measure runs one round of path p with protocol pr: a warm-up, a
// saturating run and a fixed-rate run.
func (w *world) measure(b *testing.B, p path, pr protocol, first bool) sample {
	ctx := b.Context()
	url := p.url[pr.name] + "/1k"
	var s sample

	progress("%s %s: warm-up, %d requests", pr.name, p.name, warmUpReqs)
	h := w.h2load(pr, url)
	h.Requests = warmUpReqs
	if _, err := h.Run(ctx); err != nil {
		b.Fatalf("%s %s warm-up: %v", pr.name, p.name, err)
	}

	progress("%s %s: saturation for %v", pr.name, p.name, saturateFor)
	proxy, shims := pidsOf(p.proxy), pidsOf(p.shims)
	var profile chan error
	if first && strings.HasPrefix(p.name, "waypoint") && w.adminAddr != "" {
		profile = w.profile(ctx, "profile", p.name+"-"+pr.name, saturateFor)
	}
	sampler := benchpeer.SampleRSS(func() []int { return pidsOf(p.proxy) }, 100*time.Millisecond)
	cpu0, shims0, busy0 := benchpeer.CPUTime(proxy), benchpeer.CPUTime(shims), w.busy(b)
	start := time.Now()
	h = w.h2load(pr, url)
	h.Duration = saturateFor
	r, err := h.Run(ctx)
	elapsed := time.Since(start)
	cpu1, shims1, busy1 := benchpeer.CPUTime(proxy), benchpeer.CPUTime(shims), w.busy(b)
	s.satRSS = sampler.Stop()
	s.othersSat = max(0, (busy1-busy0-(cpu1-cpu0)).Seconds()/elapsed.Seconds())
	if err != nil {
		b.Fatalf("%s %s saturation: %v", pr.name, p.name, err)
	}
	if profile != nil {
		if err := <-profile; err != nil {
			b.Logf("CPU profile: %v", err)
		}
	}
	s.rps, s.requestsDone = r.RequestsPerSec, r.Done
	s.cpuPerReq = us(cpu1-cpu0) / float64(r.Done)
	s.shimsPerReq = us(shims1-shims0) / float64(r.Done)

	progress("%s %s: %d requests/s for %v", pr.name, p.name, rateClients*ratePerClient, rateFor)
	// An open-loop Go client from this process (pinned to the load
	// CPUs): h2load's --rps adds up to a timer tick to HTTP/2 latencies.
	fr := benchpeer.FixedRate{URL: url, HTTP2: !pr.http1, Conns: rateClients, Rate: rateClients * ratePerClient, WarmUp: rateWarmUp, Duration: rateFor}
	global := strings.HasSuffix(p.name, "+grl")
	var calls0 benchpeer.Histogram
	if global {
		calls0 = w.rateLimitCalls(b)
	}
	if first && strings.HasPrefix(p.name, "waypoint") && w.adminAddr != "" {
		kind := "profile"
		if os.Getenv(traceEnv) == "1" {
			kind = "trace"
		}
		profile = w.profile(ctx, kind, p.name+"-"+pr.name+"-1k", rateWarmUp+rateFor)
	}
	cpu0, shims0, busy0 = benchpeer.CPUTime(proxy), benchpeer.CPUTime(shims), w.busy(b)
	start = time.Now()
	lat, err := fr.Run(ctx)
	elapsed = time.Since(start)
	cpu1, shims1, busy1 = benchpeer.CPUTime(proxy), benchpeer.CPUTime(shims), w.busy(b)
	if profile != nil {
		if err := <-profile; err != nil {
			b.Logf("CPU profile: %v", err)
		}
	}
	if global {
		d := w.rateLimitCalls(b).Sub(calls0)
		s.callP99, s.callsWithin1ms = d.Quantile(0.99), d.Within(0.001)
	}
	s.othersRate = max(0, (busy1-busy0-(cpu1-cpu0)).Seconds()/elapsed.Seconds())
	if err != nil {
		b.Fatalf("%s %s at a fixed rate: %v", pr.name, p.name, err)
	}
	// The rate was steady over the whole window, warm-up included.
	s.vcpu = (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	s.shimsVCPU = (shims1 - shims0).Seconds() / elapsed.Seconds()
	s.p50, s.p99 = benchpeer.Percentile(lat, 50), benchpeer.Percentile(lat, 99)
	return s
}

// rateLimitCalls scrapes the waypoint's histogram of its calls to the
// rate-limit service.
func (w *world) rateLimitCalls(b *testing.B) benchpeer.Histogram {
	h, err := benchpeer.ScrapeHistogram(b.Context(), "http://"+w.metricsAddr+"/metrics", "skiff_rate_limit_service_duration_seconds")
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// busy is the proxy CPU's busy time so far.
func (w *world) busy(b *testing.B) time.Duration {
	d, err := benchpeer.CPUBusy(w.proxyCPU)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// profile fetches a profile of the waypoint of the kind ("profile" for
// CPU, "trace" for a runtime trace) for a phase that starts now and lasts
// phase, into name.pprof or name.trace.
func (w *world) profile(ctx context.Context, kind, name string, phase time.Duration) chan error {
	done := make(chan error, 1)
	secs := int(phase/time.Second) - 1
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", w.adminAddr, kind, secs), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("%s: %s", kind, resp.Status)
			return
		}
		if err := os.MkdirAll(w.profileDir, 0o755); err != nil {
			done <- err
			return
		}
		ext := ".pprof"
		if kind == "trace" {
			ext = ".trace"
		}
		path := filepath.Join(w.profileDir, name+ext)
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			progress("%s of the waypoint: %s", kind, path)
		}
		done <- err
	}()
	return done
}

// measureBulk streams one 1 GiB response through p and records the
// proxy's memory before and at its peak during the transfer.
func (w *world) measureBulk(b *testing.B, p path, pr protocol, r *result) {
	progress("%s %s: one 1 GiB response", pr.name, p.name)
	r.bulkBefore = benchpeer.TotalRSS(pidsOf(p.proxy))
	sampler := benchpeer.SampleRSS(func() []int { return pidsOf(p.proxy) }, 50*time.Millisecond)
	h := benchpeer.H2Load{URL: p.url[pr.name] + "/1g", HTTP1: pr.http1, Clients: 1, Streams: 1, Requests: 1, CPUs: w.load}
	start := time.Now()
	res, err := h.Run(b.Context())
	elapsed := time.Since(start)
	r.bulkPeak = sampler.Stop()
	if err != nil {
		b.Fatalf("%s %s 1 GiB: %v", pr.name, p.name, err)
	}
	if res.DataBytes != bulkSize {
		b.Fatalf("%s %s 1 GiB: %d bytes of body arrived, want %d", pr.name, p.name, res.DataBytes, bulkSize)
	}
	r.bulkMBps = bulkSize / elapsed.Seconds() / 1e6
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func mb(v int64) float64 { return float64(v) / 1e6 }

// print writes the results on stdout: a table per protocol, the
// waypoint's ratios to its peers, and the targets.
func (w *world) print(res map[key]*result) {
	out := os.Stdout
	fmt.Fprintf(out, "\nThe waypoint beside HAProxy and nginx: 1 KiB responses from one nginx origin, medians of %d interleaved rounds.\n", rounds)
	fmt.Fprintf(out, "Each proxy runs on CPU %d with one worker; h2load, the origin and the waypoint's shims on CPU %s.\n", w.proxyCPU, w.load)
	fmt.Fprintf(out, "Saturation (h2load): %v after %d requests of warm-up. Fixed rate (an open-loop Go client; latency from when each request was due): %d req/s on %d connections for %v.\n",
		saturateFor, warmUpReqs, rateClients*ratePerClient, rateClients, rateFor)
	fmt.Fprintf(out, "µs CPU/req and vCPU are the proxy's own; per core = 1e6 ÷ µs CPU/req (the load CPU, not the proxy's, caps req/s here);\n")
	fmt.Fprintf(out, "+p50/+p99 are added to the direct path's; RSS is the proxy's; others = share of CPU %d taken by other processes at saturation/at 1k req/s\n", w.proxyCPU)
	fmt.Fprintf(out, "(0/0 on a quiet machine). Load average at the start: %s; at the end: %s.\n", w.loadStart, loadAverage())
	for _, pr := range protocols {
		conns := fmt.Sprintf("%d connections", pr.clients)
		if !pr.http1 {
			conns += fmt.Sprintf(" × %d streams", pr.streams)
		}
		title := map[string]string{"h1": "HTTP/1.1 keep-alive", "h2": "HTTP/2"}[pr.name]
		fmt.Fprintf(out, "\n%s, %s at saturation\n", title, conns)
		fmt.Fprintf(out, "%-12s %7s %9s %8s %7s %6s %6s %6s %6s %8s %8s %8s %6s %9s\n",
			"path", "req/s", "µsCPU/req", "per core", "vCPU@1k", "p50µs", "p99µs", "+p50", "+p99", "RSS idle", "RSS sat", "RSS 1GiB", "1GiB", "others %")
		fmt.Fprintf(out, "%-12s %7s %9s %8s %7s %6s %6s %6s %6s %8s %8s %8s %6s %9s\n",
			"", "", "", "req/s", "", "", "", "", "", "MB", "MB", "MB", "MB/s", "sat/1k")
		direct := res[key{"direct", pr.name}]
		for _, p := range w.paths {
			r := res[key{p.name, pr.name}]
			cpu, perCore, vcpu, idle, sat, bulk, bulkRate := "-", "-", "-", "-", "-", "-", "-"
			if p.proxy != nil {
				bulkRate = fmt.Sprintf("%.0f", r.bulkMBps)
				cpu = fmt.Sprintf("%.1f", r.cpuPerReq)
				perCore = fmt.Sprintf("%.0f", 1e6/r.cpuPerReq)
				vcpu = fmt.Sprintf("%.3f", r.vcpu)
				idle, sat, bulk = fmt.Sprintf("%.1f", mb(p.idleRSS)), fmt.Sprintf("%.1f", mb(r.satRSS)), fmt.Sprintf("%.1f", mb(r.bulkPeak))
			}
			fmt.Fprintf(out, "%-12s %7.0f %9s %8s %7s %6.0f %6.0f %6.0f %6.0f %8s %8s %8s %6s %9s\n",
				p.name, r.rps, cpu, perCore, vcpu, us(r.p50), us(r.p99), us(r.p50-direct.p50), us(r.p99-direct.p99),
				idle, sat, bulk, bulkRate, fmt.Sprintf("%.0f/%.0f", 100*r.othersSat, 100*r.othersRate))
		}
		wp := res[key{"waypoint", pr.name}]
		fmt.Fprintf(out, "  the waypoint's shims (stand-ins for the two ztunnels, on CPU %s): %.1f µs CPU/req at saturation, %.3f vCPU at 1k req/s\n",
			w.load, wp.shimsPerReq, wp.shimsVCPU)
		fmt.Fprintf(out, "  the waypoint's RSS during the 1 GiB response: %.1f MB before, %.1f MB at the peak (%+.1f MiB)\n",
			mb(wp.bulkBefore), mb(wp.bulkPeak), float64(wp.bulkPeak-wp.bulkBefore)/(1<<20))
		fmt.Fprintf(out, "  %-16s %7s %9s %8s %7s %6s %8s\n", "waypoint ÷ peer", "req/s", "µsCPU/req", "per core", "vCPU@1k", "+p99", "RSS idle")
		for _, peer := range []string{"haproxy-tls", "nginx-tls", "haproxy", "nginx"} {
			r, pp := res[key{peer, pr.name}], w.path(peer)
			fmt.Fprintf(out, "  ÷ %-14s %7.2f %9.2f %8.2f %7.2f %6s %8.2f\n", peer,
				wp.rps/r.rps, wp.cpuPerReq/r.cpuPerReq, r.cpuPerReq/wp.cpuPerReq, wp.vcpu/r.vcpu,
				ratio(wp.p99-direct.p99, r.p99-direct.p99), float64(w.path("waypoint").idleRSS)/float64(pp.idleRSS))
		}
	}
	fmt.Fprintln(out, "\nPaths:")
	for _, p := range w.paths {
		fmt.Fprintf(out, "  %-12s %s\n", p.name, p.note)
	}

	fmt.Fprintf(out, "\nTargets (informational: a timing never fails the benchmark):\n")
	verdict := func(ok bool) string {
		if ok {
			return "pass"
		}
		return "MISS"
	}
	for _, pr := range protocols {
		wp, hp, direct := res[key{"waypoint", pr.name}], res[key{"haproxy-tls", pr.name}], res[key{"direct", pr.name}]
		fmt.Fprintf(out, "  %s  CPU per 1,000 req/s ≤ 0.1 vCPU (Envoy's waypoint: 0.25): %.3f vCPU measured at 1k req/s (%.3f from saturation)  %s\n",
			pr.name, wp.vcpu, wp.cpuPerReq*1000/1e6, verdict(wp.vcpu <= 0.1))
		fmt.Fprintf(out, "  %s  req/s per core ≥ 0.8 × HAProxy's (TLS): %.2f × (%.0f vs %.0f)  %s\n",
			pr.name, hp.cpuPerReq/wp.cpuPerReq, 1e6/wp.cpuPerReq, 1e6/hp.cpuPerReq, verdict(hp.cpuPerReq/wp.cpuPerReq >= 0.8))
		// The waypoint's own share is its difference to the same shims
		// without it; its difference to direct includes the shims'.
		l4 := res[key{"l4-mesh", pr.name}]
		for _, base := range []struct {
			name string
			r    *result
		}{{"the mesh without a waypoint (l4-mesh)", l4}, {"direct, so with the shims' share", direct}} {
			added := wp.p99 - base.r.p99
			if added < 0 {
				// That path is no baseline then: a negative figure would
				// pass for any waypoint.
				fmt.Fprintf(out, "  %s  added p99 at 1k req/s ≤ 1 ms, over %s: not measured (its own p99, %.0f µs, is above the waypoint's, %.0f µs)\n",
					pr.name, base.name, us(base.r.p99), us(wp.p99))
				continue
			}
			fmt.Fprintf(out, "  %s  added p99 at 1k req/s ≤ 1 ms, over %s: %.0f µs  %s\n", pr.name, base.name, us(added), verdict(added <= time.Millisecond))
		}
	}
	idle := w.path("waypoint").idleRSS
	fmt.Fprintf(out, "  idle RSS ≤ 30 MB (Istio's waypoint: 60 MB): %.1f MB  %s\n", mb(idle), verdict(idle <= 30e6))

	fmt.Fprintf(out, "\nRate limits (issue 12; the same waypoint, to services with one limit that no request exceeds):\n")
	for _, pr := range protocols {
		wp, rl, grl := res[key{"waypoint", pr.name}], res[key{"waypoint+rl", pr.name}], res[key{"waypoint+grl", pr.name}]
		cost := rl.cpuPerReq - wp.cpuPerReq
		fmt.Fprintf(out, "  %s  local limit costs < 2 %% of the waypoint's CPU per request: %+.2f µs of %.1f (%+.1f %%)  %s\n",
			pr.name, cost, wp.cpuPerReq, 100*cost/wp.cpuPerReq, verdict(cost < 0.02*wp.cpuPerReq))
		fmt.Fprintf(out, "  %s  global limit adds < 1 ms at p99 at 1k req/s (service on this machine): %+.0f µs (p50 %+.0f µs)  %s\n",
			pr.name, us(grl.p99-wp.p99), us(grl.p50-wp.p50), verdict(grl.p99-wp.p99 < time.Millisecond))
		fmt.Fprintf(out, "  %s    the waypoint's own calls to the service (its histogram): p99 %.0f µs, %.1f %% within 1 ms  %s\n",
			pr.name, grl.callP99*1e6, 100*grl.callsWithin1ms, verdict(grl.callP99 < 0.001))
	}
	fmt.Fprintf(out, "  the service alone (a plain gRPC client on the load CPU, nothing else running): p50 %.0f µs, p99 %.0f µs\n", us(w.rlsP50), us(w.rlsP99))
	fmt.Fprintf(out, "  (differences of medians of separate runs: on a 2-vCPU machine they move by up to 10 µs of CPU per request\n")
	fmt.Fprintf(out, "  from one run to the next; the limiter alone: go test -run '^$' -bench . ./waypoint/internal/ratelimit,\n")
	fmt.Fprintf(out, "  and the proxy's share: go test -run '^$' -bench BenchmarkProxyHTTP1 ./waypoint/internal/proxy)\n")
}

// printPartial prints the figures of a run that -bench narrowed to some
// paths or protocols, without the ratios and targets that need them all.
func (w *world) printPartial(res map[key]*result) {
	out := os.Stdout
	fmt.Fprintf(out, "\nA partial run (-bench chose the paths), medians of %d rounds; CPU %d runs the proxy.\n", rounds, w.proxyCPU)
	fmt.Fprintf(out, "%-12s %-5s %7s %9s %7s %6s %6s\n", "path", "proto", "req/s", "µsCPU/req", "vCPU@1k", "p50µs", "p99µs")
	for _, pr := range protocols {
		for _, p := range w.paths {
			if r := res[key{p.name, pr.name}]; r != nil {
				fmt.Fprintf(out, "%-12s %-5s %7.0f %9.1f %7.3f %6.0f %6.0f\n", p.name, pr.name, r.rps, r.cpuPerReq, r.vcpu, us(r.p50), us(r.p99))
				if strings.HasSuffix(p.name, "+grl") {
					fmt.Fprintf(out, "  its calls to the rate-limit service: p99 %.0f µs, %.1f %% within 1 ms (the service alone: p50 %.0f µs, p99 %.0f µs)\n",
						r.callP99*1e6, 100*r.callsWithin1ms, us(w.rlsP50), us(w.rlsP99))
				}
			}
		}
	}
}

// path returns the path called name.
func (w *world) path(name string) path {
	for _, p := range w.paths {
		if p.name == name {
			return p
		}
	}
	panic("no path " + name)
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// ratio is a ÷ b for added latencies, which may be zero or negative.
func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}
