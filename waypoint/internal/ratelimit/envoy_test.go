package ratelimit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// These tests run Envoy's rate-limit service for real: Debian's
// redis-server from PATH, and github.com/envoyproxy/ratelimit's service
// from $SKIFF_RATELIMIT_BIN (make ratelimit-bin builds it).

// envoyRateLimit is a running envoyproxy/ratelimit with its Redis.
type envoyRateLimit struct {
	addr string // gRPC
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startEnvoyRateLimit starts Redis and the rate-limit service on loopback,
// configured with domain "skiff" and nothing else, or skips the test when
// either program is missing.
func startEnvoyRateLimit(tb testing.TB) *envoyRateLimit {
	tb.Helper()
	bin := os.Getenv("SKIFF_RATELIMIT_BIN")
	if bin == "" {
		tb.Skip("SKIFF_RATELIMIT_BIN is not set: `make ratelimit-bin` builds github.com/envoyproxy/ratelimit and sets it")
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Skipf("SKIFF_RATELIMIT_BIN: %v (`make ratelimit-bin` builds it)", err)
	}
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server is not on PATH (Debian: apt-get install redis-server)")
	}
	dir := tb.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	redisLog := &lockedBuffer{}
	rcmd := exec.Command(redis, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	rcmd.Stdout, rcmd.Stderr = redisLog, redisLog
	if err := rcmd.Start(); err != nil {
		tb.Fatalf("starting redis-server: %v", err)
	}
	redisDone := make(chan struct{})
	go func() { rcmd.Wait(); close(redisDone) }()
	tb.Cleanup(func() { rcmd.Process.Kill(); <-redisDone })
	poll(tb, "redis-server", redisDone, redisLog, func() bool { return redisPing(sock) })

	conf := filepath.Join(dir, "runtime", "ratelimit", "config")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "config.yaml"), []byte("domain: skiff\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	ports := freePorts(tb, 3)
	e := &envoyRateLimit{addr: net.JoinHostPort("127.0.0.1", ports[1]), log: &lockedBuffer{}, done: make(chan struct{})}
	e.cmd = exec.Command(bin)
	e.cmd.Env = []string{
		"USE_STATSD=false", "LOG_LEVEL=warn",
		"BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=unix", "REDIS_URL=" + sock,
		"RUNTIME_ROOT=" + filepath.Join(dir, "runtime"), "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false",
		"HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED=true",
		"HOST=127.0.0.1", "PORT=" + ports[0],
		"GRPC_HOST=127.0.0.1", "GRPC_PORT=" + ports[1],
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + ports[2],
	}
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", bin, err)
	}
	go func() { e.cmd.Wait(); close(e.done) }()
	tb.Cleanup(e.stop)
	health := "http://" + net.JoinHostPort("127.0.0.1", ports[0]) + "/healthcheck"
	poll(tb, "the rate-limit service", e.done, e.log, func() bool {
		resp, err := http.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return e
}

// stop ends the service and waits for it.
func (e *envoyRateLimit) stop() {
	e.cmd.Process.Kill()
	<-e.done
}

// poll calls ready until it says so, failing if the process ends first or
// it takes unreasonably long.
func poll(tb testing.TB, what string, exited <-chan struct{}, log fmt.Stringer, ready func() bool) {
	tb.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(30 * time.Second)
	for !ready() {
		select {
		case <-exited:
			tb.Fatalf("%s exited before it was ready:\n%s", what, log)
		case <-giveUp:
			tb.Fatalf("%s not ready after 30 s:\n%s", what, log)
		case <-tick.C:
		}
	}
}

func redisPing(sock string) bool {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// freePorts finds n loopback ports nothing listens on now.
func freePorts(tb testing.TB, n int) []string {
	tb.Helper()
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// month is the fill interval of the service's MONTH unit. A window that
// long makes the counts of a test independent of when it runs: its
// fixed window turns over once in 30 days.
const month = 30 * 24 * 3600 * 1000

// uniquePolicy names a policy no earlier run has counted.
func uniquePolicy(tb testing.TB, name string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "ns/" + name + "-" + hex.EncodeToString(b)
}

// Two waypoint replicas share one GLOBAL limit: across both, exactly the
// limit is allowed; per-identity keys and overrides hold across them too;
// with the service stopped, each limit takes its failure mode.
func TestEnvoyRateLimitService(t *testing.T) {
	e := startEnvoyRateLimit(t)
	shared := global(uniquePolicy(t, "shared"), 10, month, waypointapi.RateLimitKey_GLOBAL)
	perClient := global(uniquePolicy(t, "per-client"), 2, month, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	perClient.Route = "ns/api"
	perClient.Overrides = []*waypointapi.RateLimitOverride{{Principals: []string{bob.String()}, Requests: 4, FillIntervalMs: month}}
	svc := service(shared, perClient)
	var replicas []*Limiter
	for range 2 {
		// A generous timeout: the test is about counting, and a slow call
		// would let a request through (failure mode ALLOW).
		replicas = append(replicas, newLimiter(t, nil, Options{ServiceAddress: e.addr, Timeout: 10 * time.Second}, waypoint(svc)))
	}

	allowed := 0
	for i := range 30 {
		v := replicas[i%2].Limit(context.Background(), call{peer: alice}.request(svc))
		if v.Allowed {
			allowed++
			continue
		}
		if v.Status != http.StatusTooManyRequests {
			t.Fatalf("request %d: %+v, want 429 or allowed", i, v)
		}
		if got, want := v.Header().Get(HeaderRateLimitPolicy), `"`+shared.Policy+`";q=10;w=2592000`; got != want {
			t.Errorf("RateLimit-Policy = %s, want %s", got, want)
		}
		if ra, err := strconv.Atoi(v.Header().Get(HeaderRetryAfter)); err != nil || ra < 1 || ra > 2592000 {
			t.Errorf("Retry-After = %q", v.Header().Get(HeaderRetryAfter))
		}
	}
	if allowed != 10 {
		t.Errorf("%d of 30 allowed across two replicas, want the limit of 10", allowed)
	}

	// Per client, on the route only (the shared limit is used up, so take
	// it away).
	svc = service(perClient)
	for _, l := range replicas {
		l.Update(waypoint(svc))
	}
	for _, tc := range []struct {
		c    call
		want int
	}{{call{peer: alice}, 2}, {call{peer: bob}, 4}, {call{peer: carol}, 2}} {
		tc.c.rule = rule("api", "")
		got := 0
		for i := range 10 {
			if replicas[i%2].Limit(context.Background(), tc.c.request(svc)).Allowed {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("%s: %d of 10 allowed, want %d", tc.c.peer, got, tc.want)
		}
	}

	// The service stopped: ALLOW lets requests through, DENY refuses.
	e.stop()
	for _, mode := range []waypointapi.RateLimit_FailureMode{waypointapi.RateLimit_ALLOW, waypointapi.RateLimit_DENY} {
		rl := global(uniquePolicy(t, "down"), 1, month, waypointapi.RateLimitKey_GLOBAL)
		rl.FailureMode = mode
		svc := service(rl)
		l := newLimiter(t, nil, Options{ServiceAddress: e.addr}, waypoint(svc))
		for i := range 3 {
			v := l.Limit(context.Background(), call{}.request(svc))
			if mode == waypointapi.RateLimit_ALLOW && !v.Allowed {
				t.Errorf("%v, request %d: %+v, want allowed", mode, i, v)
			}
			if mode == waypointapi.RateLimit_DENY && v.Status != http.StatusInternalServerError {
				t.Errorf("%v, request %d: %+v, want 500", mode, i, v)
			}
		}
	}
}

// BenchmarkGlobal is one request under one GLOBAL limit, through the real
// service and Redis on this machine: the latency a GLOBAL limit adds.
func BenchmarkGlobal(b *testing.B) {
	e := startEnvoyRateLimit(b)
	rl := global(uniquePolicy(b, "bench"), 1_000_000_000, 1000, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	svc := service(rl)
	l := newLimiter(b, nil, Options{ServiceAddress: e.addr, Timeout: 10 * time.Second}, waypoint(svc))
	req := call{peer: alice}.request(svc)
	b.ReportAllocs()
	for b.Loop() {
		if !l.Limit(context.Background(), req).Allowed {
			b.Fatal("refused")
		}
	}
}
