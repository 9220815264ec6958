package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// A rule's request timeout and backend timeout answer 504 when the
// backend does not answer in time, over HTTP/1.1 and HTTP/2; with a
// retry, the backend timeout bounds each attempt and every attempt is
// made.
func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name             string
		appProtocol      string
		request, backend uint32 // ms
		retry            *waypointapi.Retry
		hits             int64
	}{
		// Each attempt must reach the backend before its timeout for the
		// hits to add up, even on a loaded machine: 500 ms, not less.
		{"request timeout", "http", 500, 0, nil, 1},
		{"backend timeout", "http", 0, 500, nil, 1},
		{"backend timeout within the request's", "http", 10_000, 500, nil, 1},
		{"backend timeout retried", "http", 0, 500, &waypointapi.Retry{Attempts: 2, BackoffMs: 1}, 3},
		{"request timeout, h2", "http2", 500, 0, nil, 1},
		{"backend timeout, h2", "http2", 0, 500, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := wpService("echo", echoVIP, 80, 8080, tc.appProtocol)
			svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "slow", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
				Backends:         []*waypointapi.BackendRef{backendRef("echo", 1)},
				RequestTimeoutMs: tc.request,
				BackendTimeoutMs: tc.backend,
				Retry:            tc.retry,
			}}}}
			m, eps := oneService(t, svc, meshOptions{}, "127.77.16.1:8080")
			release := make(chan struct{})
			t.Cleanup(func() { close(release) }) // runs before the servers close
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			c := m.http1Client()
			if tc.appProtocol == "http2" {
				c = m.http2Client()
			}
			resp, body := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/slow", nil))
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("status %d %q, want 504", resp.StatusCode, body)
			}
			if got := eps[0].hits.Load(); got != tc.hits {
				t.Errorf("backend hits %d, want %d", got, tc.hits)
			}
			if log := m.access.String(); !strings.Contains(log, "flags=UT") {
				t.Errorf("access log lacks the UT flag:\n%s", log)
			}
		})
	}
}

// A request timeout that fires while the answer's body streams cuts the
// answer short, visibly: the client's read fails rather than end as if
// the body were whole. The timeout must leave the answer's head time to
// reach the client first, even on a loaded machine (the race detector,
// other packages' tests): 2 s, not less.
func TestTimeoutDuringResponseBody(t *testing.T) {
	for i, proto := range []string{"http", "http2"} {
		t.Run(proto, func(t *testing.T) {
			svc := wpService("echo", echoVIP, 80, 8080, proto)
			svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "slow", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
				Backends:         []*waypointapi.BackendRef{backendRef("echo", 1)},
				RequestTimeoutMs: 2000,
			}}}}
			m, eps := oneService(t, svc, meshOptions{}, "127.77.16."+strconv.Itoa(10+i)+":8080")
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "first half")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			c := m.http1Client()
			if proto == "http2" {
				c = m.http2Client()
			}
			resp, err := c.Do(mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			b, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Errorf("the body ended cleanly after %q", b)
			}
			if !strings.HasPrefix(string(b), "first half") {
				t.Errorf("body %q", b)
			}
		})
	}
}
