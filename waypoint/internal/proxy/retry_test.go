package proxy

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
)

// retryRoute is the echo service with one rule that retries codes up to
// attempts times, 1 ms apart, to the echo service itself.
func retryRoute(attempts uint32, codes ...uint32) *waypointapi.Service {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "retrying", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
		Name:     "all",
		Backends: []*waypointapi.BackendRef{backendRef("echo", 1)},
		Retry:    &waypointapi.Retry{Attempts: attempts, Codes: codes, BackoffMs: 1},
	}}}}
	return svc
}

// answer answers code after reading the whole request body.
func answer(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
	}
}

// metricValue returns the value of the series of name whose labels
// include every one of labels (`k="v"` each), summed over the series that
// match, and whether there was one.
func metricValue(scrape, name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(scrape, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmtSscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// The default policy retries a 503: a backend that fails every other
// request is never seen failing, and each request costs exactly two
// backend hits.
func TestRetryAlternatingFailures(t *testing.T) {
	m, eps := oneService(t, nil, meshOptions{}, "127.77.11.1:8080")
	var n atomic.Int64
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	c := m.http1Client()
	const requests = 10
	for range requests {
		resp, body := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/flaky", nil))
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("got %d %q, want the retry's 200", resp.StatusCode, body)
		}
	}
	if got := eps[0].hits.Load(); got != 2*requests {
		t.Errorf("backend hits %d, want exactly %d", got, 2*requests)
	}
	if got, _ := metricValue(m.scrape(), "skiff_waypoint_retries_total", `reason="status"`); got != requests {
		t.Errorf("skiff_waypoint_retries_total{reason=status} %v, want %d", got, requests)
	}
}

// A route's retry of 500 with 3 attempts sends a request to an
// always-failing backend exactly 4 times, and the client sees the last
// answer; a status the route does not list is not retried.
func TestRetryRouteAttempts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		code     int
		attempts uint32
		hits     int64
	}{
		{"listed status", 500, 3, 4},
		{"unlisted status", 502, 3, 1},
		{"503 not listed by the route", 503, 3, 1},
		{"listed, one attempt", 500, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, eps := oneService(t, retryRoute(tc.attempts, 500), meshOptions{}, "127.77.12.1:8080")
			eps[0].handle(answer(tc.code))
			resp, _ := m.do(m.http1Client(), mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if got := eps[0].hits.Load(); got != tc.hits {
				t.Errorf("backend hits %d, want exactly %d", got, tc.hits)
			}
		})
	}
}

// When every request fails, the budget caps retries at ratio × requests
// plus the floor's reserve, whatever the route's attempts allow.
func TestRetryBudgetCapsRetries(t *testing.T) {
	bc := retry.BudgetConfig{Ratio: 0.1, MinPerSecond: 0.5} // window: the default 10 s
	m, eps := oneService(t, retryRoute(3, 500), meshOptions{budget: bc}, "127.77.13.1:8080")
	eps[0].handle(answer(500))
	c := m.http1Client()
	const requests = 30
	for range requests {
		resp, _ := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
		if resp.StatusCode != 500 {
			t.Fatalf("status %d, want the backend's 500", resp.StatusCode)
		}
	}
	retries := eps[0].hits.Load() - requests
	limit := bc.Ratio*requests + bc.MinPerSecond*retry.DefaultWindow.Seconds()
	t.Logf("%d retries for %d requests (budget: at most %v)", retries, requests, limit)
	if float64(retries) > limit {
		t.Errorf("%d retries for %d failing requests, the budget allows at most %v", retries, requests, limit)
	}
	if retries == 0 {
		t.Error("no retry at all: the budget's reserve should allow some")
	}
	s := m.scrape()
	if got, _ := metricValue(s, "skiff_waypoint_retries_total"); got != float64(retries) {
		t.Errorf("skiff_waypoint_retries_total %v, want the %d retries the backend saw", got, retries)
	}
	if got, _ := metricValue(s, "skiff_waypoint_retry_budget_exhausted_total"); got == 0 {
		t.Error("skiff_waypoint_retry_budget_exhausted_total did not count the refused retries")
	}
}

// A connect failure (an endpoint whose ztunnel is not listening) is
// retried on the other endpoint: every request succeeds there, and the
// access log and metrics show the tries that went to the dead one first.
func TestRetryAfterConnectFailureGoesElsewhere(t *testing.T) {
	const live, dead = "127.77.14.1:8080", "127.77.14.2:8080"
	st := meshstate.Config{Services: []*meshstate.Service{service("echo", echoVIP, 80, 8080)}, Workloads: []*meshstate.Workload{
		workload("echo-live", live, "echo", hostname("echo"), 80),
		workload("echo-dead", dead, "echo", hostname("echo"), 80), // nothing listens on 127.77.14.2:15008
	}}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{wpService("echo", echoVIP, 80, 8080, "http")}}, st, meshOptions{})
	ep := m.startEndpoint("echo-live", live, "echo", echoOK)
	c := m.http1Client()
	// Power of two choices over two endpoints draws the dead one first
	// half the time; until outlier detection ejects it, requests keep
	// finding it.
	var requests int64
	for requests = 1; requests <= 64; requests++ {
		resp, body := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
		if resp.StatusCode != 200 || resp.Header.Get("X-Endpoint") != "echo-live" {
			t.Fatalf("request %d: %d %q from %q", requests, resp.StatusCode, body, resp.Header.Get("X-Endpoint"))
		}
		if v, _ := metricValue(m.scrape(), "skiff_waypoint_retries_total", `reason="connect_failure"`); v > 0 {
			break
		}
	}
	if requests > 64 {
		t.Fatal("64 requests and not one tried the dead endpoint")
	}
	if got := ep.hits.Load(); got != requests {
		t.Errorf("live endpoint hits %d, want %d (one per request)", got, requests)
	}
	if log := m.access.String(); !strings.Contains(log, "attempts=2") || !strings.Contains(log, "upstream="+live) {
		t.Errorf("the access log shows no request that took two attempts to reach %s:\n%s", live, log)
	}
}

// A retried POST sends its body again byte for byte; one larger than the
// replay limit (64 KiB) is not retried, and the client gets the backend's
// failure.
func TestRetryReplaysBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proto   string
		size    int
		hits    int64
		status  int
		retried bool
	}{
		{"10 KiB replayed", "http", 10 << 10, 2, 200, true},
		{"64 KiB replayed", "http", 64 << 10, 2, 200, true},
		{"100 KiB not retried", "http", 100 << 10, 1, 503, false},
		{"h2: 10 KiB replayed", "http2", 10 << 10, 2, 200, true},
		{"h2: 100 KiB not retried", "http2", 100 << 10, 1, 503, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, tc.proto), meshOptions{}, "127.77.15.1:8080")
			body := make([]byte, tc.size)
			rng := rand.New(rand.NewPCG(1, uint64(tc.size)))
			for i := range body {
				body[i] = byte(rng.Uint32())
			}
			sums := make(chan [sha256.Size]byte, 4)
			var n atomic.Int64
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					t.Errorf("backend reading the body: %v", err)
				}
				sums <- sha256.Sum256(b)
				if n.Add(1) == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, "stored")
			})
			c := m.http1Client()
			if tc.proto == "http2" {
				c = m.http2Client()
			}
			resp, _ := m.do(c, mustRequest(t, "POST", "http://"+echoVIP+"/upload", bytes.NewReader(body)))
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d; access log:\n%s", resp.StatusCode, tc.status, m.access.String())
			}
			if got := eps[0].hits.Load(); got != tc.hits {
				t.Errorf("backend hits %d, want %d", got, tc.hits)
			}
			want := sha256.Sum256(body)
			for i := range min(tc.hits, eps[0].hits.Load()) {
				if got := <-sums; got != want {
					t.Errorf("attempt %d: the backend got a body that differs from the one sent", i+1)
				}
			}
			if !tc.retried && !strings.Contains(m.access.String(), "not_retried=") {
				t.Errorf("the access log does not say why the request was not retried:\n%s", m.access.String())
			}
		})
	}
}

func mustRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
