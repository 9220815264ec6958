package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Route matching end to end: path (exact, prefix, regular expression),
// header, query and method matches each pick their backend; a request to
// a port that has routes but matches none gets 404; a port without routes
// goes to the service itself.
func TestRouteMatching(t *testing.T) {
	const vip = "10.96.1.10"
	names := []string{"v-exact", "v-prefix", "v-header", "v-query", "v-method", "v-regex"}
	vips := []string{"10.96.1.11", "10.96.1.12", "10.96.1.13", "10.96.1.14", "10.96.1.15", "10.96.1.16"}
	addrs := []string{"127.77.10.11:8080", "127.77.10.12:8080", "127.77.10.13:8080", "127.77.10.14:8080", "127.77.10.15:8080", "127.77.10.16:8080"}
	st := backendServices(meshstate.Config{}, names, vips, addrs)
	echo := service("echo", vip, 80, 8080)
	echo.Ports = append(echo.Ports, meshstate.Port{ServicePort: 81, TargetPort: 8081})
	st.Services = append(st.Services, echo)
	self := workload("echo-0", "127.77.10.1:8080", "echo", hostname("echo"), 80)
	self.Services[testNS+"/"+hostname("echo")] = append(self.Services[testNS+"/"+hostname("echo")], meshstate.Port{ServicePort: 81, TargetPort: 8081})
	st.Workloads = append(st.Workloads, self)

	prefix := func(v string) *waypointapi.PathMatch {
		return &waypointapi.PathMatch{Type: waypointapi.MatchType_PREFIX, Value: v}
	}
	rule := func(name string, backend string, m *waypointapi.HTTPRouteMatch) *waypointapi.HTTPRouteRule {
		return &waypointapi.HTTPRouteRule{Name: name, Matches: []*waypointapi.HTTPRouteMatch{m}, Backends: []*waypointapi.BackendRef{backendRef(backend, 1)}}
	}
	wp := wpService("echo", vip, 80, 8080, "http")
	wp.Ports = append(wp.Ports, &waypointapi.ServicePort{Name: "http-admin", Port: 81, TargetPort: 8081, AppProtocol: "http"})
	wp.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Port: 80, Rules: []*waypointapi.HTTPRouteRule{
		rule("exact", "v-exact", &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_EXACT, Value: "/exact"}}),
		rule("prefix", "v-prefix", &waypointapi.HTTPRouteMatch{Path: prefix("/api")}),
		rule("header", "v-header", &waypointapi.HTTPRouteMatch{Path: prefix("/h"), Headers: []*waypointapi.HeaderMatch{{Name: "x-version", Value: "v2"}}}),
		rule("query", "v-query", &waypointapi.HTTPRouteMatch{Path: prefix("/q"), QueryParams: []*waypointapi.HeaderMatch{{Name: "canary", Value: "yes"}}}),
		rule("method", "v-method", &waypointapi.HTTPRouteMatch{Path: prefix("/m"), Method: "POST"}),
		rule("regex", "v-regex", &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_REGULAR_EXPRESSION, Value: "/items/[0-9]+"}}),
	}}}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{wp}}, st, meshOptions{})
	for i, name := range names {
		m.startEndpoint(name, addrs[i], "echo", echoOK)
	}
	m.startEndpoint("echo-0", "127.77.10.1:8081", "", echoOK) // port 81's target; the ztunnel below serves both
	m.startEndpoint("echo-0:8080", "127.77.10.1:8080", "echo", echoOK)

	c := m.http1Client()
	for _, tc := range []struct {
		method, url string
		header      http.Header
		status      int
		endpoint    string
	}{
		{"GET", "/exact", nil, 200, "v-exact"},
		{"GET", "/exact/more", nil, 404, ""},
		{"GET", "/api", nil, 200, "v-prefix"},
		{"GET", "/api/users?x=1", nil, 200, "v-prefix"},
		{"GET", "/apix", nil, 404, ""},
		{"GET", "/h", http.Header{"X-Version": {"v2"}}, 200, "v-header"},
		{"GET", "/h", http.Header{"X-Version": {"v1"}}, 404, ""},
		{"GET", "/h", nil, 404, ""},
		{"GET", "/q?canary=yes", nil, 200, "v-query"},
		{"GET", "/q?canary=no", nil, 404, ""},
		{"GET", "/q", nil, 404, ""},
		{"POST", "/m", nil, 200, "v-method"},
		{"GET", "/m", nil, 404, ""},
		{"GET", "/items/42", nil, 200, "v-regex"},
		{"GET", "/items/42x", nil, 404, ""},
		{"GET", "/", nil, 404, ""},
		// Port 81 has no route: the service itself.
		{"GET", ":81/anything", nil, 200, "echo-0"},
		{"POST", ":81/exact", nil, 200, "echo-0"},
	} {
		t.Run(tc.method+" "+tc.url, func(t *testing.T) {
			url := "http://" + vip + tc.url
			if !strings.HasPrefix(tc.url, ":") {
				url = "http://" + vip + ":80" + tc.url
			}
			req, _ := http.NewRequest(tc.method, url, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, body := m.do(c, req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tc.status)
			}
			if got := resp.Header.Get("X-Endpoint"); got != tc.endpoint {
				t.Errorf("answered by %q, want %q", got, tc.endpoint)
			}
			if tc.status == 200 {
				if want := fmt.Sprintf("%s %s", tc.method, strings.TrimPrefix(tc.url, ":81")); body != want {
					t.Errorf("backend saw %q, want %q", body, want)
				}
			}
		})
	}
}

// A rule that cannot be applied arrives with no backends (istiod-lite and
// Compile fail it closed that way), as does one whose backends all weigh
// 0: its requests get 500, and go nowhere.
func TestRuleWithoutBackendsAnswers500(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backends []*waypointapi.BackendRef
	}{
		{"no backends", nil},
		{"every weight 0", []*waypointapi.BackendRef{{Name: "echo", Namespace: testNS, Hostname: hostname("echo"), Port: 80, Weight: 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := wpService("echo", echoVIP, 80, 8080, "http")
			svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{Backends: tc.backends}}}}
			m, eps := oneService(t, svc, meshOptions{}, "127.77.40.1:8080")
			resp, err := m.http1Client().Get("http://" + echoVIP + "/x")
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp.Body)
			if resp.StatusCode != http.StatusInternalServerError || eps[0].hits.Load() != 0 {
				t.Fatalf("status %d, %d requests at the endpoint; want 500 and none", resp.StatusCode, eps[0].hits.Load())
			}
		})
	}
}
