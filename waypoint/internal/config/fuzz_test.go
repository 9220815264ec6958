package config_test

import (
	"cmp"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

// FuzzCompile is the xDS conversion's fuzz test: random bytes decoded as
// a Waypoint resource. Compile never panics and rejects only a resource
// without a name or namespace; a resource it accepts is consistent
// (lookups find every service, values are within the limits it checks),
// and each problem stays where it is: no policy is dropped and a policy
// with a problem denies everything, a rule with one fails closed, a
// service is compiled as it would be alone, and every service is either
// compiled or reported dropped. Resolve on random requests never panics
// and only ever returns a rule of the service.
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
	svc0(w).HttpRoutes = append(svc0(w).HttpRoutes, &waypointapi.HTTPRoute{Name: "consumer", Namespace: "team-a", ConsumerNamespace: "team-a", Port: 80, Rules: []*waypointapi.HTTPRouteRule{{
		Matches:  []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: prefix, Value: "/api"}}},
		Backends: []*waypointapi.BackendRef{backendRef("echo")},
	}}})
	seeds = append(seeds, w)
	// One of each problem Compile contains.
	broken := valid()
	broken.Policies = []*waypointapi.L7Authorization{{Name: "p", Namespace: "ns", Action: 7}}
	rule0(broken).Matches = append(rule0(broken).Matches, &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: regex, Value: "(a"}})
	svc0(broken).GrpcRoutes[0].Port = 1 << 20
	broken.Services = append(broken.Services, bystander(), bystander())
	seeds = append(seeds, broken)
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
			if !errors.As(err, &fe) || fe.Field != "name" && fe.Field != "namespace" {
				t.Fatalf("Compile error %q (%T) rejects a resource that names its waypoint", err, err)
			}
			if wp.GetName() != "" && wp.GetNamespace() != "" {
				t.Fatalf("Compile rejected %s/%s: %v", wp.GetNamespace(), wp.GetName(), err)
			}
			return
		}
		checkContained(t, &wp, c)
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
			// rules maps each rule to its group: "" for the producer's,
			// else the consumer namespace. A rule that carries out its
			// route (has backends or filters) is in the group of its
			// route's namespace, so that no namespace's route reaches
			// another namespace's clients; only a rule failing closed may
			// be elsewhere.
			rules := map[*config.Rule]string{}
			groups := map[string]*config.ConsumerRoutes{"": {HTTP: svc.HTTP, GRPC: svc.GRPC}}
			for ns, cr := range svc.Consumers {
				if ns == "" || ns == svc.Namespace || cr == nil {
					t.Fatalf("%s: consumer routes under namespace %q", svc.Key(), ns)
				}
				groups[ns] = cr
			}
			for group, cr := range groups {
				for _, table := range []*config.RouteTable{cr.HTTP, cr.GRPC} {
					if table != nil && len(table.Entries) == 0 {
						t.Fatalf("%s: empty route table instead of nil", svc.Key())
					}
					for _, e := range entries(table) {
						if e.Rule == nil {
							t.Fatalf("%s: entry without a rule", svc.Key())
						}
						checkRule(t, e.Rule)
						want := cmp.Or(group, svc.Namespace)
						if !failsClosed(e.Rule) && e.Rule.Route.Namespace != want {
							t.Fatalf("%s: rule of %s in the routes of namespace %q", svc.Key(), e.Rule.Route, want)
						}
						if g, seen := rules[e.Rule]; seen && g != group {
							t.Fatalf("%s: rule of %s in two groups", svc.Key(), e.Rule.Route)
						}
						rules[e.Rule] = group
					}
				}
			}
			clients := map[spiffeid.ID]string{nobody: ""}
			for ns := range svc.Consumers {
				if id, err := spiffeid.FromSegments(spiffeid.RequireTrustDomainFromString("cluster.local"), "ns", ns, "sa", "default"); err == nil {
					clients[id] = ns
				}
			}
			for id, ns := range clients {
				for _, p := range []uint16{port, 80, 9090} {
					d := route.Resolve(svc, id, p, r)
					group, ok := rules[d.Rule]
					switch {
					case d.NotFound && d.Rule != nil:
						t.Fatalf("%s: NotFound with a rule", svc.Key())
					case d.Rule != nil && !ok:
						t.Fatalf("%s: Resolve returned a rule that is not the service's", svc.Key())
					case d.Rule != nil && group != "" && group != ns:
						t.Fatalf("%s: a client in %q got a rule of namespace %q's consumer routes", svc.Key(), ns, group)
					case d.Rule == nil && d.Prefix != "":
						t.Fatalf("%s: a prefix without a rule", svc.Key())
					}
					if again := route.Resolve(svc, id, p, r); again != d {
						t.Fatalf("%s: Resolve is not deterministic: %+v then %+v", svc.Key(), d, again)
					}
				}
			}
		}
	})
}

// failsClosed reports whether r stands for a rule that did not compile:
// it does nothing but answer 500.
func failsClosed(r *config.Rule) bool {
	return len(r.Backends) == 0 && r.Filters.Redirect == nil && r.Filters.RequestHeaders == nil && r.Filters.ResponseHeaders == nil && r.Filters.Rewrite == nil && len(r.Filters.Mirrors) == 0
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

// checkContained checks what Compile promises about the problems it
// contains in wp.
func checkContained(t *testing.T, wp *waypointapi.Waypoint, c *config.Waypoint) {
	t.Helper()
	dropped := map[string]bool{} // "services[i]" of each dropped service
	denied := map[string]bool{}  // field of each policy replaced
	for _, w := range c.Warnings() {
		if w.Field == "" || w.Err == nil {
			t.Fatalf("warning %+v names no field or problem", w)
		}
		switch w.Effect {
		case config.ServiceDropped:
			svc, _, _ := strings.Cut(w.Field, ".")
			if dropped[svc] {
				t.Fatalf("%s dropped twice", svc)
			}
			dropped[svc] = true
		case config.PolicyDeniesAll:
			denied[w.Field] = true
		case config.RuleFailsClosed, config.RouteFailsClosed:
		default:
			t.Fatalf("warning %q: unknown effect %d", w, w.Effect)
		}
	}
	if len(c.Services)+len(dropped) != len(wp.GetServices()) {
		t.Fatalf("%d services compiled and %d dropped, of %d", len(c.Services), len(dropped), len(wp.GetServices()))
	}
	checkPolicies(t, "", c.Policies, len(wp.GetPolicies()), denied)
	n := 0
	for i, s := range wp.GetServices() {
		name := "services[" + strconv.Itoa(i) + "]"
		if dropped[name] {
			continue
		}
		svc := c.Services[n]
		n++
		if svc.Key() != s.GetNamespace()+"/"+s.GetHostname() {
			t.Fatalf("%s compiled as %s", name, svc.Key())
		}
		checkPolicies(t, name+".", svc.Policies, len(s.GetPolicies()), denied)
		// The service compiles as it would alone: nothing from the others
		// reaches it.
		alone, err := config.Compile(&waypointapi.Waypoint{Name: "w", Namespace: "ns", Services: []*waypointapi.Service{s}})
		if err != nil || len(alone.Services) != 1 {
			t.Fatalf("%s alone: %v", name, err)
		}
		if a := alone.Services[0]; len(entries(a.HTTP)) != len(entries(svc.HTTP)) || len(entries(a.GRPC)) != len(entries(svc.GRPC)) {
			t.Fatalf("%s has %d+%d entries, %d+%d alone", name, len(entries(svc.HTTP)), len(entries(svc.GRPC)), len(entries(a.HTTP)), len(entries(a.GRPC)))
		}
		var mine, its []string
		for _, w := range c.Warnings() {
			if rest, ok := strings.CutPrefix(w.Field, name+"."); ok {
				mine = append(mine, rest+" "+w.Err.Error())
			}
		}
		for _, w := range alone.Warnings() {
			its = append(its, strings.TrimPrefix(w.Field, "services[0].")+" "+w.Err.Error())
		}
		if !slices.Equal(mine, its) {
			t.Fatalf("%s: warnings %q, alone %q", name, mine, its)
		}
		checkFailedRules(t, name, s, svc, c.Warnings())
	}
}

// checkPolicies checks that none of a list of policies was dropped and
// that those with a problem deny everything.
func checkPolicies(t *testing.T, parent string, ps []*policy.Policy, want int, denied map[string]bool) {
	t.Helper()
	if len(ps) != want {
		t.Fatalf("%spolicies: %d compiled of %d", parent, len(ps), want)
	}
	for i, p := range ps {
		if err := p.Validate(); err != nil {
			t.Fatalf("%spolicies[%d]: %v", parent, i, err)
		}
		if denied[parent+"policies["+strconv.Itoa(i)+"]"] {
			if p.Action != policy.Deny || len(p.Groups) != 1 || len(p.Groups[0].Rules) != 0 {
				t.Fatalf("%spolicies[%d] = %+v, want a DENY of everything", parent, i, p)
			}
		}
	}
}

// ruleField reads "<kind>_routes[j].rules[k]" at the start of a field
// path below a service.
var ruleField = regexp.MustCompile(`^(http|grpc)_routes\[(\d+)\]\.rules\[(\d+)\]`)

// checkFailedRules checks that every rule with a problem fails closed.
func checkFailedRules(t *testing.T, name string, s *waypointapi.Service, svc *config.Service, ws []*config.Warning) {
	t.Helper()
	for _, w := range ws {
		rest, ok := strings.CutPrefix(w.Field, name+".")
		if !ok || w.Effect != config.RuleFailsClosed {
			continue
		}
		m := ruleField.FindStringSubmatch(rest)
		if m == nil {
			t.Fatalf("rule warning on %q", w.Field)
		}
		j, _ := strconv.Atoi(m[2])
		k, _ := strconv.Atoi(m[3])
		var ref config.RouteRef
		var table *config.RouteTable
		if m[1] == "http" {
			r := s.GetHttpRoutes()[j]
			ref, table = config.RouteRef{Kind: "HTTPRoute", Namespace: r.GetNamespace(), Name: r.GetName()}, svc.HTTP
		} else {
			r := s.GetGrpcRoutes()[j]
			ref, table = config.RouteRef{Kind: "GRPCRoute", Namespace: r.GetNamespace(), Name: r.GetName()}, svc.GRPC
		}
		found := false
		for _, e := range entries(table) {
			if e.Rule.Route == ref && e.Rule.Index == k {
				found = true
				if !failedClosed(e.Rule) && !sharedRef(s, ref) {
					t.Fatalf("%s: rule %+v does not fail closed", w.Field, e.Rule)
				}
			}
		}
		if !found {
			t.Fatalf("%s: no entry stands for the rule", w.Field)
		}
	}
}

// sharedRef reports whether two routes of s have ref's name, so that their
// rules cannot be told apart.
func sharedRef(s *waypointapi.Service, ref config.RouteRef) bool {
	n := 0
	for _, r := range s.GetHttpRoutes() {
		if ref.Kind == "HTTPRoute" && r.GetName() == ref.Name && r.GetNamespace() == ref.Namespace {
			n++
		}
	}
	for _, r := range s.GetGrpcRoutes() {
		if ref.Kind == "GRPCRoute" && r.GetName() == ref.Name && r.GetNamespace() == ref.Namespace {
			n++
		}
	}
	return n > 1
}
