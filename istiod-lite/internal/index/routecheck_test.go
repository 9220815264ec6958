package index

import (
	"strings"
	"testing"
)

// The translation of a rule the waypoint would not carry out: 500 on its
// valid matches, or left out when none is valid; and the reason the
// route's status gives, naming the field.
func TestHTTPRuleChecks(t *testing.T) {
	const (
		ok      = "ok"
		failed  = "500"
		leftOut = "left out"
		to      = `"backendRefs":[{"name":"web-v2","port":80}]`
	)
	for _, tc := range []struct {
		name, rule string
		// want is ok, failed or leftOut.
		want string
		// matches is how many matches the translated rule keeps.
		matches int
		// reason is in the status, which must name the field.
		reason string
	}{
		{"valid", `{"matches":[{"path":{"type":"RegularExpression","value":"/api/v[0-9]+"}}],` + to + `}`, ok, 1, ""},
		{"regex RE2 cannot compile", `{"matches":[{"path":{"type":"RegularExpression","value":"/(?!admin)"}}],` + to + `}`,
			leftOut, 0, "matches[0].path.value: invalid regular expression"},
		{"bad regex beside a valid match", `{"matches":[{"path":{"type":"RegularExpression","value":"(a"}},{"path":{"type":"PathPrefix","value":"/b"}}],` + to + `}`,
			failed, 1, "matches[0].path.value: invalid regular expression"},
		{"regex too complex", `{"matches":[{"headers":[{"type":"RegularExpression","name":"x-a","value":"[a-z]{600}[0-9]{600}"}]}],` + to + `}`,
			leftOut, 0, "matches[0].headers[0].value: regular expression too complex"},
		{"query regex", `{"matches":[{"queryParams":[{"type":"RegularExpression","name":"q","value":"a**"}]}],` + to + `}`,
			leftOut, 0, "matches[0].queryParams[0].value: invalid regular expression"},
		{"unknown path type", `{"matches":[{"path":{"type":"Glob","value":"/a*"}}],` + to + `}`, leftOut, 0, `matches[0].path.type: unsupported path match type "Glob"`},
		{"path with an encoded NUL", `{"matches":[{"path":{"type":"Exact","value":"/a%00"}}],` + to + `}`, leftOut, 0, "matches[0].path.value: path \"/a%00\" holds an encoded NUL"},
		{"path with a space", `{"matches":[{"path":{"type":"PathPrefix","value":"/a b"}}],` + to + `}`, leftOut, 0, "matches[0].path.value: invalid path"},
		{"header value with a control character", `{"matches":[{"headers":[{"name":"x-a","value":"a\u0001"}]}],` + to + `}`, leftOut, 0, "matches[0].headers[0].value: invalid header value"},
		{"second header match on a name is not checked", `{"matches":[{"headers":[{"name":"x-a","value":"a"},{"name":"X-A","type":"RegularExpression","value":"("}]}],` + to + `}`, ok, 1, ""},
		{"header in two modifier actions", `{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"X-A","value":"1"}],"remove":["x-a"]}}],` + to + `}`,
			failed, 0, "filters[0].requestHeaderModifier.remove[0]: header X-A already has an action (set)"},
		{"framing header in a modifier", `{"filters":[{"type":"ResponseHeaderModifier","responseHeaderModifier":{"add":[{"name":"transfer-encoding","value":"chunked"}]}}],` + to + `}`,
			failed, 0, "filters[0].responseHeaderModifier.add[0].name: header Transfer-Encoding may not be modified"},
		{"Host in a request modifier", `{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"host","value":"a.example"}]}}],` + to + `}`,
			failed, 0, "filters[0].requestHeaderModifier.set[0].name: header Host may not be modified"},
		{"Host in a response modifier is fine", `{"filters":[{"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"host","value":"a.example"}]}}],` + to + `}`, ok, 0, ""},
		{"framing header on a backend's modifier", `{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"remove":["Connection"]}}]}]}`,
			failed, 0, "backendRefs[0].filters[0].requestHeaderModifier.remove[0]: header Connection may not be modified"},
		{"repeated modifier", `{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{}},{"type":"RequestHeaderModifier","requestHeaderModifier":{}}],` + to + `}`,
			failed, 0, "filters[1]: filter RequestHeaderModifier repeated"},
		{"more than 100 retries", `{"retry":{"attempts":101},` + to + `}`, failed, 0, "retry.attempts: 101 attempts, at most 100"},
		{"100 retries", `{"retry":{"attempts":100},` + to + `}`, ok, 0, ""},
		{"retry on 200", `{"retry":{"codes":[503,200]},` + to + `}`, failed, 0, "retry.codes[1]: status code 200 is not retryable"},
		{"backend timeout longer than the request timeout", `{"timeouts":{"request":"1s","backendRequest":"2s"},` + to + `}`,
			failed, 0, "timeouts.backendRequest: backend timeout 2s longer than the request timeout 1s"},
		{"backend timeout without a request timeout", `{"timeouts":{"backendRequest":"2s"},` + to + `}`, ok, 0, ""},
		{"timeout that does not parse", `{"timeouts":{"request":"soon"},` + to + `}`, failed, 0, `timeouts.request: invalid duration "soon"`},
		{"weight too large", `{"backendRefs":[{"name":"web-v2","port":80,"weight":1000001}]}`, failed, 0, "backendRefs[0].weight: weight 1000001 larger than 1000000"},
		{"weight of a backend translation drops is not checked", `{"backendRefs":[{"name":"web-v2","namespace":"other","port":80,"weight":1000001},` + to[len(`"backendRefs":[`):] + `}`, ok, 0, ""},
		{"redirect with backends", `{"filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https"}}],` + to + `}`, failed, 0, "backendRefs: a rule with a RequestRedirect filter may not have backends"},
		{"redirect status 304", `{"filters":[{"type":"RequestRedirect","requestRedirect":{"statusCode":304}}]}`, failed, 0, "filters[0].requestRedirect.statusCode: unsupported redirect status 304"},
		{"redirect hostname in upper case", `{"filters":[{"type":"RequestRedirect","requestRedirect":{"hostname":"A.example"}}]}`, failed, 0, "filters[0].requestRedirect.hostname: invalid hostname"},
		{"redirect and rewrite", `{"filters":[{"type":"RequestRedirect","requestRedirect":{}},{"type":"URLRewrite","urlRewrite":{}}]}`, failed, 0, "filters: RequestRedirect may not be combined with URLRewrite"},
		{"prefix rewrite on an exact match", `{"matches":[{"path":{"type":"Exact","value":"/a"}}],"filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/b"}}}],` + to + `}`,
			failed, 1, "matches[0].path: a ReplacePrefixMatch path modifier needs PathPrefix matches only"},
		{"full path rewrite without a slash", `{"filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplaceFullPath","replaceFullPath":"b"}}}],` + to + `}`,
			failed, 0, "filters[0].urlRewrite.path.replaceFullPath: replacement path \"b\" does not start with /"},
		{"rewrite with a query", `{"filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/b?x=1"}}}],` + to + `}`,
			failed, 0, "filters[0].urlRewrite.path: invalid path"},
		{"CORS, as before", `{"filters":[{"type":"CORS","cors":{}}],` + to + `}`, failed, 0, "filters[0]: filter CORS is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := routeIndex()
			r := httpRouteFrom(t, `{`+webParent+`,"rules":[`+tc.rule+`]}`)
			ix.SetHTTPRoute("shop", "r", r)
			svc := webService(t, ix)
			if len(svc.HttpRoutes) != 1 {
				t.Fatalf("routes %v", svc.HttpRoutes)
			}
			rules := svc.HttpRoutes[0].Rules
			bad := UnsupportedHTTPRules(r)
			switch tc.want {
			case ok:
				if len(bad) != 0 || len(rules) != 1 || len(rules[0].Backends) != 1 {
					t.Fatalf("rules %v, unsupported %+v; want the rule as written", rules, bad)
				}
			case failed:
				if len(rules) != 1 || !failsClosed(rules[0].Filters, rules[0].Backends) || rules[0].Retry != nil || rules[0].RequestTimeoutMs != 0 {
					t.Fatalf("rules %v, want one answering 500", rules)
				}
			case leftOut:
				if len(rules) != 0 {
					t.Fatalf("rules %v, want none", rules)
				}
			}
			if tc.want != ok {
				if len(bad) != 1 || bad[0].Index != 0 || !strings.Contains(bad[0].Reason, tc.reason) || bad[0].LeftOut != (tc.want == leftOut) {
					t.Fatalf("unsupported %+v, want rule 0 (left out: %v) because %q", bad, tc.want == leftOut, tc.reason)
				}
			}
			if len(rules) == 1 && len(rules[0].Matches) != tc.matches && len(r.Spec.Rules[0].Matches) > 0 {
				t.Fatalf("matches %v, want %d", rules[0].Matches, tc.matches)
			}
		})
	}
}

func TestGRPCRuleChecks(t *testing.T) {
	const to = `"backendRefs":[{"name":"web-v2","port":9090}]`
	for _, tc := range []struct {
		name, rule string
		rules      int // translated
		reason     string
		leftOut    bool
	}{
		{"valid regex", `{"matches":[{"method":{"type":"RegularExpression","service":"shop\\..*","method":"Get.*"}}],` + to + `}`, 1, "", false},
		{"bad method regex", `{"matches":[{"method":{"type":"RegularExpression","method":"Get("}}],` + to + `}`, 0, "matches[0].method.method: invalid regular expression", true},
		{"exact service with a slash", `{"matches":[{"method":{"service":"a/b"}},{"method":{"service":"ok"}}],` + to + `}`, 1, `matches[0].method.service: service "a/b" contains /`, false},
		{"bad header regex", `{"matches":[{"headers":[{"type":"RegularExpression","name":"x","value":"(("}]}],` + to + `}`, 0, "matches[0].headers[0].value: invalid regular expression", true},
		{"framing header", `{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"te","value":"trailers"}]}}],` + to + `}`, 1, "filters[0].requestHeaderModifier.set[0].name: header Te may not be modified", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := routeIndex()
			r := grpcRouteFrom(t, `{`+webParent+`,"rules":[`+tc.rule+`]}`)
			ix.SetGRPCRoute("shop", "g", r)
			svc := webService(t, ix)
			rules := svc.GrpcRoutes[0].Rules
			if len(rules) != tc.rules {
				t.Fatalf("rules %v, want %d", rules, tc.rules)
			}
			bad := UnsupportedGRPCRules(r)
			if tc.reason == "" {
				if len(bad) != 0 || len(rules[0].Backends) != 1 {
					t.Fatalf("unsupported %+v, rules %v", bad, rules)
				}
				return
			}
			if len(bad) != 1 || !strings.Contains(bad[0].Reason, tc.reason) || bad[0].LeftOut != tc.leftOut {
				t.Fatalf("unsupported %+v, want %q (left out %v)", bad, tc.reason, tc.leftOut)
			}
			if len(rules) == 1 && (!failsClosed(rules[0].Filters, rules[0].Backends) || len(rules[0].Matches) != min(1, len(r.Spec.Rules[0].Matches))) {
				t.Fatalf("rule %v, want 500 on its valid match", rules[0])
			}
		})
	}
}

// Several problems in one rule are all reported, in order.
func TestRuleProblemsJoined(t *testing.T) {
	r := httpRouteFrom(t, `{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"("}},{"method":"GET"}],
		"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"content-length","value":"0"}]}}],"retry":{"attempts":500}}]}`)
	bad := UnsupportedHTTPRules(r)
	if len(bad) != 1 {
		t.Fatalf("unsupported %+v", bad)
	}
	parts := strings.Split(bad[0].Reason, "; ")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "matches[0].path.value: ") ||
		!strings.HasPrefix(parts[1], "filters[0].requestHeaderModifier.set[0].name: ") || !strings.HasPrefix(parts[2], "retry.attempts: ") {
		t.Fatalf("reason %q", bad[0].Reason)
	}
	if bad[0].LeftOut {
		t.Fatal("left out, but a match is valid")
	}
}
