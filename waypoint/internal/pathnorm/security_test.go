package pathnorm_test

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/pathnorm"
)

// adminVariants are paths a backend would read as /admin or below it,
// written every way that should not slip past a rule on /admin.
var adminVariants = []string{
	"/admin", "/admin/", "/admin/users",
	"//admin", "///admin//users", "/./admin", "/x/../admin", "/x/y/../../admin", "/../admin", "/../../admin/users",
	"/%61dmin", "/%61%64%6d%69%6E", "/admin/%75sers",
	"/%2e/admin", "/%2e%2e/admin", "/%2E%2E/admin", "/.%2e/admin", "/public/%2e%2e/admin",
	"/admin%2f", "/admin%2F", "/admin%2Fusers", "/admin%2F..%2Fadmin", "/public%2F..%2Fadmin%2Fusers",
	"/%2fadmin", "/%2F%2Fadmin",
	"\\admin", "\\\\admin\\users", "/admin\\users", "/x\\..\\admin", "/%5cadmin", "/admin%5Cusers", "/x%5C..%5Cadmin",
	"/admin/.", "/admin/./users", "/admin/x/..", "/admin/x/%2e%2e", "/admin//",
}

// The security test at this level: with a DENY policy on /admin
// and /admin/*, every variant is denied once normalized, as the proxy
// normalizes before it authorizes. An ALLOW on /public/* does not admit
// them either. The proxy has the end-to-end version.
func TestAdminVariantsAreDenied(t *testing.T) {
	deny, err := authz.Compile(&waypointapi.L7Authorization{Name: "deny-admin", Namespace: "default",
		Action: securityapi.Action_DENY, Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{
			Matches: []*waypointapi.L7Match{{Paths: []*securityapi.StringMatch{exact("/admin"), prefix("/admin/")}}},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}
	allowPublic, err := authz.Compile(&waypointapi.L7Authorization{Name: "allow-public", Namespace: "default",
		Action: securityapi.Action_ALLOW, Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{
			Matches: []*waypointapi.L7Match{{Paths: []*securityapi.StringMatch{prefix("/public/")}}},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}
	anyPath, err := authz.Compile(&waypointapi.L7Authorization{Name: "allow-any", Namespace: "default",
		Action: securityapi.Action_ALLOW, Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{
			Matches: []*waypointapi.L7Match{{Paths: []*securityapi.StringMatch{presence()}}},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}

	decide := func(wp, svc []*policy.Policy, p string) authz.Decision {
		return authz.Decide(wp, svc, policy.Conn{
			SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.96.0.10"), DstPort: 8080,
			Peer:    spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep"),
			Request: &policy.Request{Method: "GET", Path: p, Host: "svc.default.svc.cluster.local", Header: http.Header{}},
		})
	}
	for _, v := range adminVariants {
		n, err := pathnorm.Normalize(v)
		if err != nil {
			t.Errorf("Normalize(%q): %v", v, err)
			continue
		}
		if d := decide([]*policy.Policy{deny}, []*policy.Policy{anyPath}, n); d.Allowed || d.Policy != "default/deny-admin" {
			t.Errorf("%q (normalized %q): %+v, want denied by default/deny-admin", v, n, d)
		}
		if d := decide(nil, []*policy.Policy{allowPublic}, n); d.Allowed {
			t.Errorf("%q (normalized %q): allowed by %s", v, n, d.Policy)
		}
	}
	// Paths that are not /admin pass the DENY.
	for _, v := range []string{"/ADMIN", "/administrator", "/public/admin", "/adm%69n%2Dx", "/public/x/.."} {
		n, err := pathnorm.Normalize(v)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", v, err)
		}
		if d := decide([]*policy.Policy{deny}, nil, n); !d.Allowed {
			t.Errorf("%q (normalized %q): denied by %s", v, n, d.Policy)
		}
	}
}

func exact(s string) *securityapi.StringMatch {
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *securityapi.StringMatch {
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Prefix{Prefix: s}}
}

func presence() *securityapi.StringMatch {
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}
