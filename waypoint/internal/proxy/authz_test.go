package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

func exact(v string) *securityapi.StringMatch {
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Exact{Exact: v}}
}

func prefix(v string) *securityapi.StringMatch {
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Prefix{Prefix: v}}
}

// l7Policy is an AuthorizationPolicy with one rule of one match.
func l7Policy(name string, action securityapi.Action, match *waypointapi.L7Match) *waypointapi.L7Authorization {
	return &waypointapi.L7Authorization{Name: name, Namespace: testNS, Action: action, Groups: []*waypointapi.L7Group{{
		Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{match}}},
	}}}
}

// A DENY on /admin and /admin/* holds against every spelling of those
// paths a backend could read as them: the waypoint normalizes the path
// before it authorizes, so each is refused with 403 and the backend sees
// none; paths that only look alike go through, normalized.
func TestDenyHoldsAgainstPathVariants(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.Policies = []*waypointapi.L7Authorization{l7Policy("no-admin", securityapi.Action_DENY,
		&waypointapi.L7Match{Paths: []*securityapi.StringMatch{exact("/admin"), prefix("/admin/")}})}
	m, eps := oneService(t, svc, meshOptions{}, "127.77.28.1:8080")
	var mu sync.Mutex
	var seen []string
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.EscapedPath())
		mu.Unlock()
		w.Write([]byte(r.URL.EscapedPath()))
	})
	for _, tc := range []struct {
		target string
		status int
		path   string // what the backend sees when allowed
	}{
		{"/admin", 403, ""},
		{"/admin/", 403, ""},
		{"/admin/users", 403, ""},
		{"/admin?x=1", 403, ""},
		{"/%61dmin", 403, ""},
		{"/%61%64%6D%69%6E/users", 403, ""},
		{"/x/../admin", 403, ""},
		{"/x/%2e%2e/admin", 403, ""},
		{"/./admin", 403, ""},
		{"/../admin", 403, ""},
		{"//admin", 403, ""},
		{"///admin//users", 403, ""},
		{"/admin%2Fusers", 403, ""},
		{"/admin%2fusers", 403, ""},
		{"/%2Fadmin", 403, ""},
		{"/admin%5Cusers", 403, ""},
		{"/admin\\users", 403, ""},
		{"\\admin", 400, ""}, // not origin-form: the parser refuses it
		{"/public/..%2Fadmin", 403, ""},
		{"/public/%2e%2e%5cadmin", 403, ""},
		// Look-alikes that are other paths.
		{"/adminx", 200, "/adminx"},
		{"/ADMIN", 200, "/ADMIN"},
		{"/public/admin", 200, "/public/admin"},
		{"/public/./x/../y", 200, "/public/y"},
		{"/%7Euser", 200, "/~user"},
		// Refused as malformed rather than guessed at.
		{"/admin%00", 400, ""},
		{"/%zz", 400, ""},
	} {
		t.Run(tc.target, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			resp, body := m.rawRequest(nil, echoVIP+":80", "GET "+tc.target+" HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tc.status)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.status != 200 {
				if len(seen) > 0 {
					t.Errorf("the backend saw %q", seen)
				}
				return
			}
			if body != tc.path || len(seen) != 1 {
				t.Errorf("the backend saw %q, want %q", seen, tc.path)
			}
		})
	}
	if log := m.access.String(); !strings.Contains(log, "denied_by=") {
		t.Errorf("the access log does not name the denying policy:\n%s", log)
	}
}

// An ALLOW for one principal lets that client through and refuses
// another, authenticated by its own certificate.
func TestAllowByPrincipal(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	m, eps := oneService(t, svc, meshOptions{}, "127.77.28.2:8080")
	// The policy names the sleep client; a second client has its own
	// identity.
	wp := &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}, Policies: []*waypointapi.L7Authorization{
		l7Policy("only-sleep", securityapi.Action_ALLOW, &waypointapi.L7Match{L4: &securityapi.Match{Principals: []*securityapi.StringMatch{
			exact(strings.TrimPrefix(m.clientID.String(), "spiffe://")),
		}}}),
	}}
	m.setWaypoint(wp)
	other, otherID := m.pki.cert(t, testNS, "other")
	for _, tc := range []struct {
		name   string
		client string
		status int
	}{
		{"the allowed principal", m.clientID.String(), 200},
		{"another principal", otherID.String(), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := m.clientCert
			if tc.client == otherID.String() {
				cert = other
			}
			resp, body := m.rawRequest(cert, echoVIP+":80", "GET /data HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Errorf("status %d (%q), want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
	if got := eps[0].hits.Load(); got != 1 {
		t.Errorf("backend hits %d, want 1", got)
	}
}

// An ALLOW of some paths for some methods refuses every other request.
func TestAllowPathsAndMethods(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.Policies = []*waypointapi.L7Authorization{l7Policy("read-api", securityapi.Action_ALLOW,
		&waypointapi.L7Match{Paths: []*securityapi.StringMatch{prefix("/api/")}, Methods: []*securityapi.StringMatch{exact("GET")},
			Headers: []*waypointapi.HeaderCondition{{Name: "x-token", Values: []*securityapi.StringMatch{{MatchType: &securityapi.StringMatch_Presence{Presence: &emptypb.Empty{}}}}}}})}
	m, eps := oneService(t, svc, meshOptions{}, "127.77.28.3:8080")
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"GET /api/items HTTP/1.1\r\nHost: echo\r\nX-Token: t\r\n\r\n", 200},
		{"GET /api/items HTTP/1.1\r\nHost: echo\r\n\r\n", 403},
		{"POST /api/items HTTP/1.1\r\nHost: echo\r\nX-Token: t\r\nContent-Length: 0\r\n\r\n", 403},
		{"GET /other HTTP/1.1\r\nHost: echo\r\nX-Token: t\r\n\r\n", 403},
		{"GET /api/../other HTTP/1.1\r\nHost: echo\r\nX-Token: t\r\n\r\n", 403},
	} {
		t.Run(strings.SplitN(tc.raw, "\r\n", 2)[0], func(t *testing.T) {
			resp, body := m.rawRequest(nil, echoVIP+":80", tc.raw)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d (%q), want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
	if got := eps[0].hits.Load(); got != 1 {
		t.Errorf("backend hits %d, want 1", got)
	}
}
