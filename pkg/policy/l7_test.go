package policy

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// req returns fromSleep carrying an HTTP request; hdr is name, value pairs.
func req(method, path, host string, hdr ...string) Conn {
	c := fromSleep
	r := &Request{Method: method, Path: path, Host: host, Header: http.Header{}}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	c.Request = r
	return c
}

func get(path string) Conn      { return req("GET", path, "example.com") }
func atHost(host string) Conn   { return req("GET", "/", host) }
func withHdr(kv ...string) Conn { return req("GET", "/", "example.com", kv...) }

func paths(ss ...string) []StringMatch {
	out := make([]StringMatch, len(ss))
	for i, s := range ss {
		m, err := ParsePathMatch(s)
		if err != nil {
			panic(err)
		}
		out[i] = m
	}
	return out
}

func sms(ss ...string) []StringMatch {
	out := make([]StringMatch, len(ss))
	for i, s := range ss {
		out[i] = ParseStringMatch(s)
	}
	return out
}

// With a Request, each L7 condition is checked and behaves the same in
// ALLOW, DENY and AUDIT policies.
func TestL7Fields(t *testing.T) {
	type check struct {
		name string
		c    Conn
		want bool
	}
	// rawHeader is a request whose header map was built by hand with a
	// lower-case key, as no server would canonicalize it.
	rawHeader := get("/")
	rawHeader.Request.Header = http.Header{"x-user": {"admin"}}
	twoKeys := get("/")
	twoKeys.Request.Header = http.Header{"x-user": {"admin"}, "X-User": {"bob"}}

	tests := []struct {
		name   string
		m      Match
		checks []check
	}{
		{"paths exact", Match{Paths: paths("/admin")}, []check{
			{"same", get("/admin"), true}, {"trailing slash", get("/admin/"), false},
			{"upper case", get("/ADMIN"), false}, {"longer", get("/administrator"), false},
		}},
		{"paths prefix", Match{Paths: paths("/admin/*")}, []check{
			{"below", get("/admin/x/y"), true}, {"itself", get("/admin"), false}, {"dir", get("/admin/"), true},
		}},
		{"paths suffix", Match{Paths: paths("*.php")}, []check{
			{"php", get("/x/index.php"), true}, {"html", get("/index.html"), false},
		}},
		{"paths presence", Match{Paths: paths("*")}, []check{
			{"root", get("/"), true}, {"empty", get(""), false},
		}},
		{"paths any of two", Match{Paths: paths("/a", "/b*")}, []check{
			{"a", get("/a"), true}, {"b", get("/bc"), true}, {"c", get("/c"), false},
		}},
		{"paths template one segment", Match{Paths: paths("/api/{*}/items")}, []check{
			{"one", get("/api/v1/items"), true}, {"two", get("/api/v1/x/items"), false},
			{"none", get("/api//items"), false}, {"equals sign", get("/api/a=b/items"), true},
		}},
		{"paths template any tail", Match{Paths: paths("/files/{**}")}, []check{
			{"deep", get("/files/a/b/c"), true}, {"dir", get("/files/"), true}, {"itself", get("/files"), false},
		}},
		{"not_paths", Match{NotPaths: paths("/admin", "/admin/*")}, []check{
			{"admin", get("/admin"), false}, {"below", get("/admin/x"), false}, {"public", get("/public"), true},
		}},
		{"methods", Match{Methods: sms("GET", "HEAD")}, []check{
			{"GET", get("/"), true}, {"HEAD", req("HEAD", "/", "h"), true},
			{"POST", req("POST", "/", "h"), false}, {"lower case", req("get", "/", "h"), false},
		}},
		{"not_methods", Match{NotMethods: sms("DELETE")}, []check{
			{"GET", get("/"), true}, {"DELETE", req("DELETE", "/", "h"), false},
		}},
		{"hosts exact", Match{Hosts: sms("example.com")}, []check{
			{"same", atHost("example.com"), true}, {"case", atHost("Example.COM"), true},
			{"with port", atHost("example.com:8080"), true}, {"trailing dot", atHost("example.com."), true},
			{"dot and port", atHost("EXAMPLE.com.:80"), true},
			{"other", atHost("example.org"), false}, {"longer", atHost("evil-example.com"), false},
			{"subdomain", atHost("a.example.com"), false}, {"missing", atHost(""), false},
			{"bad port", atHost("example.com:x"), false},
		}},
		{"hosts with any port", Match{Hosts: sms("example.com:*")}, []check{
			{"port", atHost("example.com:8080"), true}, {"case", atHost("EXAMPLE.COM:1"), true},
			{"no port", atHost("example.com"), false},
		}},
		{"hosts with one port", Match{Hosts: sms("example.com:8080")}, []check{
			{"that port", atHost("example.com:8080"), true}, {"case", atHost("Example.com:8080"), true},
			{"other port", atHost("example.com:9090"), false}, {"no port", atHost("example.com"), false},
		}},
		{"hosts suffix", Match{Hosts: sms("*.example.com")}, []check{
			{"sub", atHost("api.example.com"), true}, {"sub with port", atHost("API.example.com:443"), true},
			{"apex", atHost("example.com"), false},
		}},
		{"hosts prefix", Match{Hosts: sms("api.*")}, []check{
			{"match", atHost("API.example.com"), true}, {"no", atHost("www.example.com"), false},
		}},
		{"hosts presence", Match{Hosts: sms("*")}, []check{
			{"any", atHost("x"), true}, {"missing", atHost(""), false},
		}},
		{"hosts IPv6", Match{Hosts: sms("[::1]")}, []check{
			{"port", atHost("[::1]:8080"), true}, {"bare", atHost("[::1]"), true}, {"other", atHost("[::2]"), false},
		}},
		{"not_hosts", Match{NotHosts: sms("example.com")}, []check{
			{"same", atHost("example.com"), false}, {"port", atHost("example.com:80"), false},
			{"case", atHost("EXAMPLE.COM"), false}, {"other", atHost("other"), true}, {"missing", atHost(""), true},
		}},
		{"header exact", Match{Headers: []HeaderMatch{{Name: "x-user", Values: sms("admin")}}}, []check{
			{"same", withHdr("X-User", "admin"), true}, {"case of value", withHdr("X-User", "Admin"), false},
			{"missing", withHdr(), false}, {"other", withHdr("X-User", "bob"), false},
			{"two fields joined", withHdr("X-User", "admin", "X-User", "bob"), false},
			{"hand-built map", rawHeader, true},
		}},
		{"header prefix over joined fields", Match{Headers: []HeaderMatch{{Name: "x-user", Values: sms("admin,*")}}}, []check{
			{"two", withHdr("X-User", "admin", "X-User", "bob"), true}, {"one", withHdr("X-User", "admin"), false},
			{"keys of two spellings, in key order", twoKeys, false},
		}},
		{"header joined fields exact", Match{Headers: []HeaderMatch{{Name: "x-user", Values: sms("bob,admin")}}}, []check{
			{"keys of two spellings, in key order", twoKeys, true},
		}},
		{"header presence", Match{Headers: []HeaderMatch{{Name: "x-token", Values: sms("*")}}}, []check{
			{"present", withHdr("X-Token", "t"), true}, {"present empty", withHdr("X-Token", ""), true},
			{"missing", withHdr(), false},
		}},
		{"header not_values", Match{Headers: []HeaderMatch{{Name: "x-user", NotValues: sms("admin")}}}, []check{
			{"admin", withHdr("X-User", "admin"), false}, {"bob", withHdr("X-User", "bob"), true},
			{"missing", withHdr(), true},
		}},
		{"header not_values presence", Match{Headers: []HeaderMatch{{Name: "x-user", NotValues: sms("*")}}}, []check{
			{"present", withHdr("X-User", ""), false}, {"missing", withHdr(), true},
		}},
		{"header values and not_values", Match{Headers: []HeaderMatch{{Name: "x-env", Values: sms("prod*"), NotValues: sms("*-canary")}}}, []check{
			{"prod", withHdr("X-Env", "prod-eu"), true}, {"canary", withHdr("X-Env", "prod-canary"), false},
			{"dev", withHdr("X-Env", "dev"), false},
		}},
		{"headers are ANDed", Match{Headers: []HeaderMatch{{Name: "a", Values: sms("1")}, {Name: "b", Values: sms("2")}}}, []check{
			{"both", withHdr("A", "1", "B", "2"), true}, {"one", withHdr("A", "1"), false},
		}},
		{"header host is the authority", Match{Headers: []HeaderMatch{{Name: "host", Values: sms("example.com:8080")}}}, []check{
			{"same", atHost("example.com:8080"), true}, {"no port", atHost("example.com"), false},
		}},
		{"L4 and L7 are ANDed", Match{Principals: sm("cluster.local/ns/default/sa/sleep"), Paths: paths("/admin")}, []check{
			{"both", get("/admin"), true},
			{"wrong path", get("/x"), false},
			{"wrong peer", Conn{SrcIP: fromAPI.SrcIP, DstIP: fromAPI.DstIP, DstPort: 8080, Peer: apiID, Request: get("/admin").Request}, false},
		}},
		{"all L7 fields", Match{Paths: paths("/api/*"), Methods: sms("POST"), Hosts: sms("*.svc"),
			Headers: []HeaderMatch{{Name: "content-type", Values: sms("application/json")}}}, []check{
			{"all", req("POST", "/api/x", "a.svc", "Content-Type", "application/json"), true},
			{"method", req("GET", "/api/x", "a.svc", "Content-Type", "application/json"), false},
			{"host", req("POST", "/api/x", "a.org", "Content-Type", "application/json"), false},
			{"header", req("POST", "/api/x", "a.svc"), false},
		}},
	}
	for _, tt := range tests {
		for _, ck := range tt.checks {
			t.Run(tt.name+"/"+ck.name, func(t *testing.T) {
				for _, a := range []Action{Allow, Deny, Audit} {
					if got := pol("p", a, tt.m).Matches(ck.c); got != ck.want {
						t.Errorf("%v: Matches = %v, want %v", a, got, ck.want)
					}
				}
			})
		}
	}
}

// Without a Request (ztunnel, TCP through the waypoint), an L7 condition
// cannot be checked: false in ALLOW, true in DENY, so that only the L4
// conditions beside it decide a DENY.
func TestL7WithoutRequest(t *testing.T) {
	to80 := conn("10.0.0.1", "10.96.0.10", 80, sleepID)
	hdr := []HeaderMatch{{Name: "x-user", Values: sms("admin")}}
	tests := []struct {
		name                string
		m                   Match
		c                   Conn
		wantAllow, wantDeny bool
	}{
		{"paths", Match{Paths: paths("/admin")}, fromSleep, false, true},
		{"not_paths", Match{NotPaths: paths("/admin")}, fromSleep, false, true},
		{"methods", Match{Methods: sms("GET")}, fromSleep, false, true},
		{"not_methods", Match{NotMethods: sms("GET")}, fromSleep, false, true},
		{"hosts", Match{Hosts: sms("example.com")}, fromSleep, false, true},
		{"not_hosts", Match{NotHosts: sms("example.com")}, fromSleep, false, true},
		{"headers", Match{Headers: hdr}, fromPlaintext, false, true},
		{"template", Match{Paths: paths("/a/{**}")}, fromSleep, false, true},
		{"L7 with L4 that holds", Match{Paths: paths("/admin"), DestinationPorts: []uint32{8080}}, fromSleep, false, true},
		{"L7 with L4 that fails", Match{Paths: paths("/admin"), DestinationPorts: []uint32{8080}}, to80, false, false},
		{"L7 with principal that fails", Match{Paths: paths("/admin"), Principals: sm("*")}, fromPlaintext, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.c.Request != nil {
				t.Fatal("test connection carries a request")
			}
			if got := pol("p", Allow, tt.m).Matches(tt.c); got != tt.wantAllow {
				t.Errorf("ALLOW: Matches = %v, want %v", got, tt.wantAllow)
			}
			if got := pol("p", Deny, tt.m).Matches(tt.c); got != tt.wantDeny {
				t.Errorf("DENY: Matches = %v, want %v", got, tt.wantDeny)
			}
			if got := pol("p", Audit, tt.m).Matches(tt.c); got != tt.wantDeny {
				t.Errorf("AUDIT: Matches = %v, want %v (as DENY)", got, tt.wantDeny)
			}
		})
	}
}

// An Unsupported match with L7 conditions: never in ALLOW; in DENY the
// conditions that can be checked decide.
func TestL7Unsupported(t *testing.T) {
	m := Match{Unsupported: true, Paths: paths("/admin")}
	for _, tt := range []struct {
		name                string
		c                   Conn
		wantAllow, wantDeny bool
	}{
		{"path matches", get("/admin"), false, true},
		{"path differs", get("/public"), false, false},
		{"no request", fromSleep, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := pol("p", Allow, m).Matches(tt.c); got != tt.wantAllow {
				t.Errorf("ALLOW: Matches = %v, want %v", got, tt.wantAllow)
			}
			if got := pol("p", Deny, m).Matches(tt.c); got != tt.wantDeny {
				t.Errorf("DENY: Matches = %v, want %v", got, tt.wantDeny)
			}
		})
	}
}

func TestEvaluateL7(t *testing.T) {
	denyAdmin := pol("deny-admin", Deny, Match{Paths: paths("/admin", "/admin/*")})
	allowGet := pol("allow-get", Allow, Match{Methods: sms("GET", "HEAD")})
	auditAll := &Policy{Name: "audit-all", Namespace: "default", Action: Audit, Groups: []Group{{}}}
	tcp := fromSleep

	tests := []struct {
		name       string
		policies   []*Policy
		c          Conn
		want       bool
		wantPolicy string
		wantReason string
	}{
		{"DENY path matches", []*Policy{denyAdmin}, get("/admin/users"), false, "default/deny-admin", reasonDenyMatched},
		{"DENY path differs", []*Policy{denyAdmin}, get("/public"), true, "", reasonNoAllowPolicy},
		{"DENY with paths denies TCP", []*Policy{denyAdmin}, tcp, false, "default/deny-admin", reasonDenyMatched},
		{"ALLOW method matches", []*Policy{allowGet}, get("/"), true, "default/allow-get", reasonAllowMatched},
		{"ALLOW method differs", []*Policy{allowGet}, req("POST", "/", "h"), false, "", reasonNoAllowMatch},
		{"ALLOW with methods denies TCP", []*Policy{allowGet}, tcp, false, "", reasonNoAllowMatch},
		{"DENY beats ALLOW", []*Policy{allowGet, denyAdmin}, get("/admin"), false, "default/deny-admin", reasonDenyMatched},
		{"AUDIT alone allows", []*Policy{auditAll}, get("/admin"), true, "", reasonNoAllowPolicy},
		{"AUDIT is not an ALLOW", []*Policy{auditAll, allowGet}, req("POST", "/", "h"), false, "", reasonNoAllowMatch},
		{"AUDIT does not deny", []*Policy{auditAll, allowGet}, get("/"), true, "default/allow-get", reasonAllowMatched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Decision{Allowed: tt.want, Policy: tt.wantPolicy, Reason: tt.wantReason}
			if d := Evaluate(tt.policies, tt.c); d != want {
				t.Errorf("Evaluate = %+v, want %+v", d, want)
			}
		})
	}
}

func TestEvaluateAll(t *testing.T) {
	denyAdmin := pol("deny-admin", Deny, Match{Paths: paths("/admin")})
	allowGet := pol("allow-get", Allow, Match{Methods: sms("GET")})
	allowSleep := pol("allow-sleep", Allow, Match{Principals: sm("cluster.local/ns/default/sa/sleep")})
	tests := []struct {
		name       string
		sets       [][]*Policy
		c          Conn
		want       bool
		wantPolicy string
	}{
		{"no sets", nil, get("/"), true, ""},
		{"empty sets", [][]*Policy{nil, {}}, get("/"), true, ""},
		{"DENY in second set beats ALLOW in first", [][]*Policy{{allowGet}, {denyAdmin}}, get("/admin"), false, "default/deny-admin"},
		{"DENY in first set beats ALLOW in second", [][]*Policy{{denyAdmin}, {allowGet}}, get("/admin"), false, "default/deny-admin"},
		{"ALLOW in one set is enough", [][]*Policy{{allowGet}, {allowSleep}}, req("POST", "/", "h"), true, "default/allow-sleep"},
		{"ALLOW in either set makes ALLOW needed", [][]*Policy{{denyAdmin}, {allowGet}}, req("POST", "/", "h"), false, ""},
		{"nil entries", [][]*Policy{{nil}, {nil, allowGet}}, get("/"), true, "default/allow-get"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := EvaluateAll(tt.c, tt.sets...)
			if d.Allowed != tt.want || d.Policy != tt.wantPolicy {
				t.Errorf("EvaluateAll = %+v, want Allowed=%v Policy=%q", d, tt.want, tt.wantPolicy)
			}
			// The union does not depend on how it is split.
			if got := Evaluate(slices.Concat(tt.sets...), tt.c); got != d {
				t.Errorf("Evaluate of the concatenation = %+v, want %+v", got, d)
			}
		})
	}
}

func TestAudited(t *testing.T) {
	auditAdmin := pol("audit-admin", Audit, Match{Paths: paths("/admin*")})
	auditPost := pol("audit-post", Audit, Match{Methods: sms("POST")})
	denyAll := &Policy{Name: "deny-all", Namespace: "default", Action: Deny, Groups: []Group{{}}}
	tests := []struct {
		name string
		sets [][]*Policy
		c    Conn
		want []string
	}{
		{"none", nil, get("/admin"), nil},
		{"no AUDIT policy", [][]*Policy{{denyAll}}, get("/admin"), nil},
		{"one matches", [][]*Policy{{auditAdmin, auditPost}}, get("/admin"), []string{"default/audit-admin"}},
		{"both match, in order", [][]*Policy{{auditPost}, {nil, auditAdmin}}, req("POST", "/admin", "h"),
			[]string{"default/audit-post", "default/audit-admin"}},
		{"neither matches", [][]*Policy{{auditAdmin, auditPost}}, get("/x"), nil},
		{"unchecked L7 counts as a match", [][]*Policy{{auditAdmin}}, fromSleep, []string{"default/audit-admin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Audited(tt.c, tt.sets...); !slices.Equal(got, tt.want) {
				t.Errorf("Audited = %q, want %q", got, tt.want)
			}
		})
	}
}

// The common case, a destination without policies, costs no allocation;
// nor does a set holding only policies of the other kind.
func TestNoPoliciesNoAllocations(t *testing.T) {
	c := req("GET", "/", "example.com", "X-User", "a")
	auditOnly := []*Policy{pol("a", Audit, Match{Paths: paths("/x")})}
	denyOnly := []*Policy{pol("d", Deny, Match{Paths: paths("/x")})}
	for name, f := range map[string]func(){
		"EvaluateAll none":       func() { EvaluateAll(c, nil, nil) },
		"Audited none":           func() { Audited(c, nil, nil) },
		"EvaluateAll AUDIT only": func() { EvaluateAll(c, auditOnly, nil) },
		"Audited DENY only":      func() { Audited(c, denyOnly, nil) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

func TestHostOnly(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"example.com:8080", "example.com"},
		{"example.com:", "example.com"},
		{"example.com.", "example.com"},
		{"example.com.:80", "example.com"},
		{"example.com:x", "example.com:x"},
		{"[::1]:8080", "[::1]"},
		{"[::1]", "[::1]"},
		{"::1", "::1"},
		{"10.0.0.1:80", "10.0.0.1"},
		{".", "."},
		{"", ""},
	} {
		if got := hostOnly(tt.in); got != tt.want {
			t.Errorf("hostOnly(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPathTemplates(t *testing.T) {
	valid := []struct {
		tmpl  string
		match []string
		miss  []string
	}{
		{"/foo/{*}", []string{"/foo/bar", "/foo/a=b", "/foo/%20"}, []string{"/foo", "/foo/", "/foo/bar/baz", "/fo/bar"}},
		{"/foo/{**}/", []string{"/foo/bar/", "/foo//", "/foo/a/b/"}, []string{"/foo/bar", "/foo/", "/foo"}},
		{"/foo/{*}/bar/{**}", []string{"/foo/buzz/bar/", "/foo/buzz/bar/baz", "/foo/b/bar/x/y"}, []string{"/foo/buzz/bar", "/foo/a/b/bar/x"}},
		{"/{**}", []string{"/", "/a", "/a/b/c"}, []string{""}},
		{"/{*}", []string{"/a"}, []string{"/", "/a/", "/a/b"}},
		{"/{**}/x", []string{"/a/x", "//x", "/a/b/x"}, []string{"/x", "/a/xx", "/ax"}},
		{"/api/{*}/v1.json", []string{"/api/a/v1.json"}, []string{"/api/a/v1xjson", "/api//v1.json"}},
		{"/{*}/{*}", []string{"/a/b"}, []string{"/a", "/a/b/c", "/a/"}},
	}
	for _, tt := range valid {
		m, err := ParsePathMatch(tt.tmpl)
		if err != nil {
			t.Errorf("ParsePathMatch(%q) = %v", tt.tmpl, err)
			continue
		}
		if m.Kind != Template || m.String() != tt.tmpl {
			t.Errorf("ParsePathMatch(%q) = %+v", tt.tmpl, m)
		}
		for _, p := range tt.match {
			if !m.Matches(p) {
				t.Errorf("%q does not match %q", tt.tmpl, p)
			}
		}
		for _, p := range tt.miss {
			if m.Matches(p) {
				t.Errorf("%q matches %q", tt.tmpl, p)
			}
		}
	}
	invalid := []struct{ tmpl, err string }{
		{"/*/baz/{*}", "'*'"},
		{"/**/baz/{*}", "'*'"},
		{"/{**}/foo/{*}", "operator after {**}"},
		{"/{**}/{**}", "operator after {**}"},
		{"/foo/{*}.txt", "'{'"},
		{"/foo/{*}*", "'{'"},
		{"/foo/{x}/{*}", "'{'"},
		{"foo/{*}", "does not start with '/'"},
		{"*/{**}", "does not start with '/'"},
		{"/foo//{*}", "empty segment"},
		{"/a b/{*}", "' '"},
	}
	for _, tt := range invalid {
		_, err := ParsePathMatch(tt.tmpl)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParsePathMatch(%q) = %v, want error containing %q", tt.tmpl, err, tt.err)
		}
	}
	// Values without an operator are ordinary matches.
	for in, want := range map[string]StringMatch{
		"/foo/{bar}": {Kind: Exact, Value: "/foo/{bar}"},
		"/foo*":      {Kind: Prefix, Value: "/foo"},
		"*":          {Kind: Presence},
	} {
		if got, err := ParsePathMatch(in); err != nil || got != want {
			t.Errorf("ParsePathMatch(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
