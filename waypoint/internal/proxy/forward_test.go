package proxy

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

const echoVIP = "10.96.0.10"

// echoOK answers 200 with the path it saw.
var echoOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
})

// oneService is a mesh with one service, echo, on cluster IP echoVIP port
// 80, backed by the given endpoints (all HBONE).
func oneService(t testing.TB, wpSvc *waypointapi.Service, o meshOptions, eps ...string) (*testMesh, []*testEndpoint) {
	t.Helper()
	st := meshstate.Config{Services: []*meshstate.Service{service("echo", echoVIP, 80, 8080)}}
	for i, addr := range eps {
		st.Workloads = append(st.Workloads, workload(fmt.Sprintf("echo-%d", i), addr, "echo", hostname("echo"), 80))
	}
	if wpSvc == nil {
		wpSvc = wpService("echo", echoVIP, 80, 8080, "http")
	}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{wpSvc}}, st, o)
	var out []*testEndpoint
	for i, addr := range eps {
		out = append(out, m.startEndpoint(fmt.Sprintf("echo-%d", i), addr, "echo", echoOK))
	}
	return m, out
}

func TestRequestWithoutRouteGoesToTheService(t *testing.T) {
	m, eps := oneService(t, nil, meshOptions{}, "127.77.1.1:8080")
	seen := make(chan http.Header, 1)
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "x-hop")
		w.Header().Set("X-Hop", "must not reach the client")
		fmt.Fprint(w, "hello")
	})
	req, _ := http.NewRequest("GET", "http://"+echoVIP+"/a/../b", nil)
	req.Header.Set("Connection", "x-secret")
	req.Header.Set("X-Secret", "hop-by-hop: must not reach the backend")
	resp, err := m.http1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp.Body); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Error("a response field named in Connection reached the client")
	}
	h := <-seen
	if h.Get("X-Secret") != "" {
		t.Error("a request field named in Connection reached the backend")
	}
	if got := h.Get("X-Forwarded-For"); got != "127.77.0.100" {
		t.Errorf("X-Forwarded-For %q, want the client's address", got)
	}
	if got := h.Get("Forwarded"); got != "for=127.77.0.100;proto=http" {
		t.Errorf("Forwarded %q", got)
	}
	if h.Get("X-Request-Id") == "" {
		t.Error("no x-request-id added")
	}
	if peer := <-eps[0].peers; peer != m.self {
		t.Errorf("the endpoint's ztunnel saw %s, want the waypoint's identity %s", peer, m.self)
	}
	if log := m.access.String(); !strings.Contains(log, "status=200") || !strings.Contains(log, "path=/b") {
		t.Errorf("access log %q lacks the request", log)
	}
}

// A 90/10 split over 2,000 requests lands within the 99.9% binomial bounds,
// and a weight of 0 gets nothing.
func TestCanaryWeights(t *testing.T) {
	st := meshstate.Config{Services: []*meshstate.Service{
		service("echo", echoVIP, 80, 8080),
		service("echo-v1", "10.96.0.11", 80, 8080),
		service("echo-v2", "10.96.0.12", 80, 8080),
		service("echo-v3", "10.96.0.13", 80, 8080),
	}, Workloads: []*meshstate.Workload{
		workload("v1", "127.77.2.1:8080", "echo", hostname("echo-v1"), 80),
		workload("v2", "127.77.2.2:8080", "echo", hostname("echo-v2"), 80),
		workload("v3", "127.77.2.3:8080", "echo", hostname("echo-v3"), 80),
	}}
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	backend := func(name string, w uint32) *waypointapi.BackendRef {
		return &waypointapi.BackendRef{Name: name, Namespace: testNS, Hostname: hostname(name), Port: 80, Weight: w}
	}
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "split", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
		Backends: []*waypointapi.BackendRef{backend("echo-v1", 90), backend("echo-v2", 10), backend("echo-v3", 0)},
	}}}}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}}, st, meshOptions{})
	v1 := m.startEndpoint("v1", "127.77.2.1:8080", "echo", echoOK)
	v2 := m.startEndpoint("v2", "127.77.2.2:8080", "echo", echoOK)
	v3 := m.startEndpoint("v3", "127.77.2.3:8080", "echo", echoOK)
	c := m.http1Client()
	c.Transport.(*http.Transport).DisableKeepAlives = false
	const n = 2000
	for range n {
		resp, err := c.Get("http://" + echoVIP + "/")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// 99.9% two-sided normal bound for Binomial(2000, 0.1): 3.29 sigmas.
	mean, sigma := n*0.1, math.Sqrt(n*0.1*0.9)
	got := float64(v2.hits.Load())
	if math.Abs(got-mean) > 3.29*sigma {
		t.Errorf("the 10%% backend got %v of %d requests, outside %v ± %.1f", got, n, mean, 3.29*sigma)
	}
	if v1.hits.Load()+v2.hits.Load() != n {
		t.Errorf("v1 %d + v2 %d != %d", v1.hits.Load(), v2.hits.Load(), n)
	}
	if v3.hits.Load() != 0 {
		t.Errorf("a backend of weight 0 got %d requests", v3.hits.Load())
	}
}

func TestHeaderFilterAndRewrite(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
		Matches: []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_PREFIX, Value: "/old"}}},
		Filters: []*waypointapi.HTTPFilter{
			{Kind: &waypointapi.HTTPFilter_RequestHeaderModifier{RequestHeaderModifier: &waypointapi.HeaderModifier{Set: []*waypointapi.Header{{Name: "X-Canary", Value: "yes"}}, Remove: []string{"X-Drop"}}}},
			{Kind: &waypointapi.HTTPFilter_ResponseHeaderModifier{ResponseHeaderModifier: &waypointapi.HeaderModifier{Add: []*waypointapi.Header{{Name: "X-Served-By", Value: "waypoint"}}}}},
			{Kind: &waypointapi.HTTPFilter_UrlRewrite{UrlRewrite: &waypointapi.Rewrite{HasPath: true, PathType: waypointapi.MatchType_PREFIX, Path: "/new"}}},
		},
		Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: testNS, Hostname: hostname("echo"), Port: 80, Weight: 1}},
	}}}}
	m, eps := oneService(t, svc, meshOptions{}, "127.77.3.1:8080")
	var got atomic.Pointer[http.Request]
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r)
		w.WriteHeader(204)
	})
	req, _ := http.NewRequest("GET", "http://"+echoVIP+"/old/x?q=1", nil)
	req.Header.Set("X-Drop", "1")
	resp, err := m.http1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp.Body)
	r := got.Load()
	switch {
	case resp.StatusCode != 204:
		t.Fatalf("status %d", resp.StatusCode)
	case r.URL.RequestURI() != "/new/x?q=1":
		t.Errorf("backend saw %q, want /new/x?q=1", r.URL.RequestURI())
	case r.Header.Get("X-Canary") != "yes" || r.Header.Get("X-Drop") != "":
		t.Errorf("request header filter not applied: %v", r.Header)
	case resp.Header.Get("X-Served-By") != "waypoint":
		t.Errorf("response header filter not applied: %v", resp.Header)
	}
}

// HTTP/2 end to end: the client speaks h2 with prior knowledge, the port
// says http2, so the backend gets h2 too, and trailers come back.
func TestHTTP2WithTrailers(t *testing.T) {
	m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, "http2"), meshOptions{}, "127.77.4.1:8080")
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "proto=%d", r.ProtoMajor)
		w.Header().Set("X-Checksum", "abc")
	})
	resp, err := m.http2Client().Get("http://" + echoVIP + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	if resp.ProtoMajor != 2 || body != "proto=2" {
		t.Fatalf("client proto %d, backend said %q", resp.ProtoMajor, body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
		t.Errorf("trailer X-Checksum %q, want abc (trailers %v)", got, resp.Trailer)
	}
}
