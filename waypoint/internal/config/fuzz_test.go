package config_test

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

// FuzzCompile is the xDS conversion's fuzz test: random bytes decoded as
// a Waypoint resource. Compile never panics and fails only with a
// *FieldError; a resource it accepts is consistent (lookups find every
// service, values are within the limits it checks), and Resolve on random
// requests never panics and only ever returns a rule of the service.
func FuzzCompile(f *testing.F) {
	seeds := []*waypointapi.Waypoint{valid(), {}}
	w := valid()
	rule0(w).Filters = []*waypointapi.HTTPFilter{
		rewrite(&waypointapi.Rewrite{Hostname: "a.example", HasPath: true, PathType: prefix, Path: "/v2"}),
		mirror(&waypointapi.Mirror{Backend: backendRef("shadow"), Numerator: 1, Denominator: 3}),
		responseHeaders(&waypointapi.HeaderModifier{Add: headers("x-r", "1")}),
	}
	rule0(w).Matches = append(rule0(w).Matches,
		&waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: prefix, Value: "/api/"}, Method: "GET"},
		&waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: prefix, Value: "/x"}, QueryParams: []*waypointapi.HeaderMatch{{Type: regex, Name: "q", Value: "[0-9]+"}}})
	svc0(w).HttpRoutes = append(svc0(w).HttpRoutes, &waypointapi.HTTPRoute{Name: "redirect", Namespace: "ns", Port: 80, Rules: []*waypointapi.HTTPRouteRule{{
		Matches: []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: exact, Value: "/old"}}},
		Filters: []*waypointapi.HTTPFilter{redirect(&waypointapi.Redirect{Scheme: "https", StatusCode: 301})},
	}}})
	grpcMatch0(w).Type, grpcMatch0(w).Method = regex, "Get.*"
	seeds = append(seeds, w)
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "GET", "/api/v1", "q=1", "version", "v1", false, uint16(80))
		f.Add(b, "POST", "/pkg.Echo/GetItem", "", "version", "v1", true, uint16(9090))
	}
	f.Fuzz(func(t *testing.T, resource []byte, method, path, query, header, value string, grpc bool, port uint16) {
		var wp waypointapi.Waypoint
		if proto.Unmarshal(resource, &wp) != nil {
			return
		}
		c, err := config.Compile(&wp)
		if err != nil {
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("Compile error %q (%T) does not name a field", err, err)
			}
			return
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{}}
		r.Header[http.CanonicalHeaderKey(header)] = []string{value}
		if grpc {
			r.Header.Set("Content-Type", "application/grpc")
		}
		for _, svc := range c.Services {
			if c.Service(svc.Key()) != svc {
				t.Fatalf("Service(%q) does not find the service", svc.Key())
			}
			for _, ip := range svc.VIPs {
				if c.ServiceByVIP(ip) != svc {
					t.Fatalf("ServiceByVIP(%s) does not find %s", ip, svc.Key())
				}
			}
			rules := map[*config.Rule]bool{}
			for _, table := range []*config.RouteTable{svc.HTTP, svc.GRPC} {
				if table != nil && len(table.Entries) == 0 {
					t.Fatalf("%s: empty route table instead of nil", svc.Key())
				}
				for _, e := range entries(table) {
					if e.Rule == nil {
						t.Fatalf("%s: entry without a rule", svc.Key())
					}
					checkRule(t, e.Rule)
					rules[e.Rule] = true
				}
			}
			for _, p := range []uint16{port, 80, 9090} {
				d := route.Resolve(svc, p, r)
				switch {
				case d.NotFound && d.Rule != nil:
					t.Fatalf("%s: NotFound with a rule", svc.Key())
				case d.Rule != nil && !rules[d.Rule]:
					t.Fatalf("%s: Resolve returned a rule that is not the service's", svc.Key())
				case d.Rule == nil && d.Prefix != "":
					t.Fatalf("%s: a prefix without a rule", svc.Key())
				}
				if again := route.Resolve(svc, p, r); again != d {
					t.Fatalf("%s: Resolve is not deterministic: %+v then %+v", svc.Key(), d, again)
				}
			}
		}
	})
}

func entries(t *config.RouteTable) []config.Entry {
	if t == nil {
		return nil
	}
	return t.Entries
}

// checkRule checks what Compile promises about a rule it accepted.
func checkRule(t *testing.T, r *config.Rule) {
	t.Helper()
	for _, fs := range append([]*config.Filters{&r.Filters}, backendFilters(r)...) {
		if rd := fs.Redirect; rd != nil {
			switch rd.StatusCode {
			case 301, 302, 303, 307, 308:
			default:
				t.Fatalf("redirect status %d", rd.StatusCode)
			}
			if len(r.Backends) > 0 {
				t.Fatal("redirect with backends")
			}
		}
		if fs.Redirect != nil && fs.Rewrite != nil {
			t.Fatal("redirect and rewrite together")
		}
		for _, m := range fs.Mirrors {
			if m.Denominator == 0 || m.Numerator > m.Denominator {
				t.Fatalf("mirror %d/%d", m.Numerator, m.Denominator)
			}
		}
	}
	for _, b := range r.Backends {
		if b.Weight > 1_000_000 || b.Hostname == "" {
			t.Fatalf("backend %+v", b)
		}
		if b.Filters.Redirect != nil || b.Filters.Rewrite != nil || len(b.Filters.Mirrors) > 0 {
			t.Fatalf("backend %s with filters other than header modifiers", b.Key())
		}
	}
	if r.RequestTimeout > 0 && r.BackendTimeout > r.RequestTimeout {
		t.Fatalf("backend timeout %v above request timeout %v", r.BackendTimeout, r.RequestTimeout)
	}
}

func backendFilters(r *config.Rule) []*config.Filters {
	var out []*config.Filters
	for i := range r.Backends {
		out = append(out, &r.Backends[i].Filters)
	}
	return out
}
