package benchpeer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// RateLimitBinEnv names the environment variable holding the path of
// Envoy's rate-limit service binary (github.com/envoyproxy/ratelimit's
// service_cmd), which `make ratelimit-bin` builds and exports.
const RateLimitBinEnv = "SKIFF_RATELIMIT_BIN"

// RateLimitService is Envoy's rate-limit service
// (github.com/envoyproxy/ratelimit) with a redis-server of its own, both
// on loopback ports of their own.
type RateLimitService struct {
	// Dir holds the configuration, Redis's files and the logs.
	Dir string
	// CPUs pins both processes (taskset's syntax); "" does not.
	CPUs string
	// Bin is the service's binary; "" means $SKIFF_RATELIMIT_BIN.
	Bin string
	// Configs are the service's domain configurations, YAML by file name
	// (without ".yaml").
	Configs map[string]string
}

// RateLimitProc is a running rate-limit service and its Redis.
type RateLimitProc struct {
	// Addr is the service's gRPC address (host:port).
	Addr           string
	Service, Redis *Proc
}

// Close stops the service, then Redis.
func (p *RateLimitProc) Close() error {
	return errors.Join(p.Service.Close(), p.Redis.Close())
}

// RateLimitTools returns the service's binary and redis-server's path, or
// an error saying how to get them.
func RateLimitTools(bin string) (service, redis string, err error) {
	if bin == "" {
		bin = os.Getenv(RateLimitBinEnv)
	}
	if bin == "" {
		return "", "", fmt.Errorf("%s is not set (make ratelimit-bin builds envoyproxy/ratelimit and exports it)", RateLimitBinEnv)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", "", fmt.Errorf("the rate-limit service (%s): %w (make ratelimit-bin builds it)", bin, err)
	}
	redis, err = exec.LookPath("redis-server")
	if err != nil {
		return "", "", errors.New("redis-server not found: install Debian's redis-server (make ratelimit-bin does)")
	}
	return bin, redis, nil
}

// StartRateLimitService starts Redis and the service, and returns once the
// service answers its health check.
func StartRateLimitService(ctx context.Context, s RateLimitService) (*RateLimitProc, error) {
	bin, redisBin, err := RateLimitTools(s.Bin)
	if err != nil {
		return nil, err
	}
	port := func() (string, error) {
		p, err := FreePort("127.0.0.1")
		return strconv.Itoa(p), err
	}
	ports := make([]string, 4) // redis, gRPC, HTTP, debug
	for i := range ports {
		if ports[i], err = port(); err != nil {
			return nil, err
		}
	}
	redisDir := filepath.Join(s.Dir, "redis")
	configDir := filepath.Join(s.Dir, "runtime", "ratelimit", "config")
	for _, d := range []string{redisDir, configDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	for name, yaml := range s.Configs {
		if err := os.WriteFile(filepath.Join(configDir, name+".yaml"), []byte(yaml), 0o600); err != nil {
			return nil, err
		}
	}
	redisAddr := net.JoinHostPort("127.0.0.1", ports[0])
	redis, err := startLogged(ctx, "redis", s.Dir, Command(ctx, s.CPUs, redisBin,
		"--bind", "127.0.0.1", "--port", ports[0], "--dir", redisDir, "--save", "", "--appendonly", "no"), redisAddr)
	if err != nil {
		return nil, err
	}
	cmd := Command(ctx, s.CPUs, bin)
	cmd.Env = append(os.Environ(),
		"HOST=127.0.0.1", "PORT="+ports[2], "GRPC_HOST=127.0.0.1", "GRPC_PORT="+ports[1],
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT="+ports[3],
		"USE_STATSD=false", "LOG_LEVEL=warn",
		"RUNTIME_ROOT="+filepath.Join(s.Dir, "runtime"), "RUNTIME_SUBDIRECTORY=ratelimit",
		"RUNTIME_WATCH_ROOT=false", "RUNTIME_IGNOREDOTFILES=true",
		"REDIS_SOCKET_TYPE=tcp", "REDIS_URL="+redisAddr,
	)
	addr := net.JoinHostPort("127.0.0.1", ports[1])
	svc, err := startLogged(ctx, "ratelimit", s.Dir, cmd, addr)
	if err != nil {
		redis.Close()
		return nil, err
	}
	p := &RateLimitProc{Addr: addr, Service: svc, Redis: redis}
	if err := waitHealthy(ctx, svc, "http://"+net.JoinHostPort("127.0.0.1", ports[2])+"/healthcheck"); err != nil {
		p.Close()
		log, _ := os.ReadFile(filepath.Join(s.Dir, "ratelimit.log"))
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return p, nil
}

// waitHealthy polls url until it answers 200, p exits, or ctx or half a
// minute ends.
func waitHealthy(ctx context.Context, p *Proc, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rate-limit service not healthy at %s: %w", url, ctx.Err())
		case <-p.Exited():
			return p.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Latencies asks the service ShouldRateLimit rate times a second for d,
// open loop (as FixedRate), each call with one descriptor of domain under
// a limit it never reaches, and returns how long each call took from
// when it was due: the service's own latency, to compare a proxy's calls
// with.
func (p *RateLimitProc) Latencies(ctx context.Context, domain string, rate int, d time.Duration) ([]time.Duration, error) {
	if rate <= 0 || d <= 0 {
		return nil, errors.New("benchpeer: Latencies needs a rate and a duration")
	}
	cc, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("rate-limit service client: %w", err)
	}
	defer cc.Close()
	client := rlsv3.NewRateLimitServiceClient(cc)
	req := &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "benchpeer", Value: "latency"}},
		Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: math.MaxUint32, Unit: typev3.RateLimitUnit_SECOND},
	}}}
	if _, err := client.ShouldRateLimit(ctx, req); err != nil { // connects
		return nil, fmt.Errorf("ShouldRateLimit: %w", err)
	}
	first := time.Now()
	return openLoop(ctx, first, first, first.Add(d), time.Second/time.Duration(rate), func(ctx context.Context) error {
		if _, err := client.ShouldRateLimit(ctx, req); err != nil {
			return fmt.Errorf("ShouldRateLimit: %w", err)
		}
		return nil
	})
}
