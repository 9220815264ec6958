package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
)

// localConfig serves echo (cluster IP 10.96.0.10:80) from a plain-TCP
// endpoint at backend, with header filter value v on every request.
func localConfig(backend netip.AddrPort, v string) string {
	return fmt.Sprintf(`
workloads:
- name: echo-1
  namespace: default
  addresses: [%[1]s]
  protocol: NONE
  services:
    default/echo.default.svc.cluster.local: [{servicePort: 80, targetPort: %[2]d}]
services:
- name: echo
  namespace: default
  addresses: [10.96.0.10]
  ports: [{servicePort: 80, targetPort: %[2]d}]
waypoint:
  name: waypoint
  namespace: default
  services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{name: http, port: 80, targetPort: %[2]d}]
    httpRoutes:
    - name: r
      namespace: default
      rules:
      - filters: [{requestHeaderModifier: {set: [{name: X-Config, value: %[3]s}]}}]
        backends: [{name: echo, namespace: default, hostname: echo.default.svc.cluster.local, port: 80, weight: 1}]
`, backend.Addr(), backend.Port(), v)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The waypoint in local mode: it starts from a file, serves a request over
// HBONE, takes an edited file, keeps its configuration over a broken one,
// and drains and stops cleanly.
func TestLocalMode(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: td, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	backendLn, err := net.Listen("tcp", "127.78.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := backendLn.Addr().(*net.TCPAddr).AddrPort()
	go http.Serve(backendLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "config=%s", r.Header.Get("X-Config"))
	}))
	defer backendLn.Close()

	file := filepath.Join(dir, "waypoint.yaml")
	if err := os.WriteFile(file, []byte(localConfig(backend, "one")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Waypoint: "default/waypoint", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		LocalConfig: file, CACert: filepath.Join(dir, "ca-cert.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		CertTTL: time.Hour, HBONEAddr: freeAddr(t), ReadinessAddr: freeAddr(t), AdminAddr: freeAddr(t),
		DrainDelay: 5 * time.Second, DrainTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, AccessLog: true,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Readiness, then requests, through a client's HBONE tunnel.
	eventually(t, func() error {
		resp, err := http.Get("http://" + cfg.ReadinessAddr + "/healthz/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readiness %d", resp.StatusCode)
		}
		return nil
	})
	client := clientFor(t, ca, td, cfg.HBONEAddr)
	get := func() (string, error) {
		resp, err := client.Get("http://10.96.0.10/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	expect := func(want string) {
		t.Helper()
		eventually(t, func() error {
			got, err := get()
			if err == nil && got != want {
				err = fmt.Errorf("got %q, want %q", got, want)
			}
			return err
		})
	}
	expect("config=one")
	if err := os.WriteFile(file, []byte(localConfig(backend, "two")), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("config=two")
	if err := os.WriteFile(file, []byte("waypoint: {name: waypoint, namespace: default, services: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	// The broken file is refused (the admin endpoint says why) and the
	// last configuration keeps serving.
	eventually(t, func() error {
		resp, err := http.Get("http://" + cfg.AdminAddr + "/config_dump")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"lastError"`) {
			return fmt.Errorf("no lastError in the config dump yet")
		}
		return nil
	})
	if got, err := get(); err != nil || got != "config=two" {
		t.Fatalf("after a broken file: %q, %v", got, err)
	}

	// A rate limit in the file: two requests an hour, then 429 with the
	// limit's fields.
	limited := localConfig(backend, "three") + `    rateLimits:
    - {policy: default/rl, route: default/r, requests: 2, fillIntervalMs: 3600000, burst: 2}
`
	if err := os.WriteFile(file, []byte(limited), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		resp, err := client.Get("http://10.96.0.10/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			return fmt.Errorf("status %d, want 429 once the limit is in", resp.StatusCode)
		}
		if got, want := resp.Header.Get("RateLimit-Policy"), `"default/rl";q=2;w=3600`; got != want {
			t.Errorf("RateLimit-Policy %q, want %q", got, want)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		return nil
	})

	// SIGTERM: the waypoint is not ready at once, yet it still serves
	// new HBONE connections during the drain delay, since ztunnels learn
	// a moment later that it is going away.
	cancel()
	eventually(t, func() error {
		resp, err := http.Get("http://" + cfg.ReadinessAddr + "/healthz/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("readiness %d while draining, want 503", resp.StatusCode)
		}
		return nil
	})
	late := clientFor(t, ca, td, cfg.HBONEAddr)
	resp, err := late.Get("http://10.96.0.10/")
	if err != nil {
		t.Fatalf("a new connection during the drain delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !resp.Close {
		t.Errorf("during the drain delay: status %d, close %v; want 429 (the limit) and Connection: close", resp.StatusCode, resp.Close)
	}
}

// clientFor returns an HTTP client whose connections are HBONE tunnels to
// the waypoint at addr, presenting the identity of default/sleep.
func clientFor(t *testing.T, ca *identity.CA, td spiffeid.TrustDomain, addr string) *http.Client {
	t.Helper()
	id, _ := identity.WorkloadID(td, "default", "sleep")
	wp, _ := identity.WorkloadID(td, "default", "waypoint")
	mgr := identity.NewManager(ca.Client(), identity.ManagerOptions{})
	cert, err := mgr.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := hbone.NewClient(hbone.ClientConfig{Bundles: identity.NewBundles(ca.Bundle())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	waypoint := netip.MustParseAddrPort(addr)
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
			authority, err := netip.ParseAddrPort(a)
			if err != nil {
				return nil, err
			}
			tc := cert.TLS
			return hc.Dial(ctx, &tc, waypoint, authority, []spiffeid.ID{wp}, nil)
		}},
	}
}

// eventually retries f until it succeeds, for up to 20 seconds: the file
// watcher and the listeners come up on their own schedule.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for delay := 10 * time.Millisecond; time.Now().Before(deadline); delay = min(2*delay, 500*time.Millisecond) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(delay)
	}
	t.Fatalf("did not converge: %v", err)
}
