package config

import (
	"strings"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// filterSet is where a list of filters appears, which decides the kinds
// it may hold.
type filterSet int

const (
	// httpRuleFilters are an HTTPRoute rule's: every kind.
	httpRuleFilters filterSet = iota
	// grpcRuleFilters are a GRPCRoute rule's: header modifiers and
	// mirrors (GRPCRouteFilterType has no redirect or rewrite).
	grpcRuleFilters
	// backendFilters are a BackendRef's: header modifiers only. Rejecting
	// the rest fails closed where silently dropping them would not.
	backendFilters
)

// compileFilters compiles the filters of parent (a rule or a backend).
// Gateway API allows each kind once, except RequestMirror, and forbids
// RequestRedirect together with URLRewrite.
func compileFilters(parent field, fs []*waypointapi.HTTPFilter, set filterSet) (Filters, error) {
	var out Filters
	for i, fl := range fs {
		f := parent.index("filters", i)
		var err error
		switch k := fl.GetKind().(type) {
		case *waypointapi.HTTPFilter_RequestHeaderModifier:
			f = f.child("request_header_modifier")
			if out.RequestHeaders != nil {
				return Filters{}, f.errorf("RequestHeaderModifier repeated")
			}
			out.RequestHeaders, err = compileHeaderModifier(f, k.RequestHeaderModifier, true)
		case *waypointapi.HTTPFilter_ResponseHeaderModifier:
			f = f.child("response_header_modifier")
			if out.ResponseHeaders != nil {
				return Filters{}, f.errorf("ResponseHeaderModifier repeated")
			}
			out.ResponseHeaders, err = compileHeaderModifier(f, k.ResponseHeaderModifier, false)
		case *waypointapi.HTTPFilter_RequestRedirect:
			f = f.child("request_redirect")
			switch {
			case set != httpRuleFilters:
				return Filters{}, f.errorf("RequestRedirect is only supported on HTTPRoute rules")
			case out.Redirect != nil:
				return Filters{}, f.errorf("RequestRedirect repeated")
			case out.Rewrite != nil:
				return Filters{}, f.errorf("RequestRedirect may not be combined with URLRewrite")
			}
			out.Redirect, err = compileRedirect(f, k.RequestRedirect)
		case *waypointapi.HTTPFilter_UrlRewrite:
			f = f.child("url_rewrite")
			switch {
			case set != httpRuleFilters:
				return Filters{}, f.errorf("URLRewrite is only supported on HTTPRoute rules")
			case out.Rewrite != nil:
				return Filters{}, f.errorf("URLRewrite repeated")
			case out.Redirect != nil:
				return Filters{}, f.errorf("URLRewrite may not be combined with RequestRedirect")
			}
			out.Rewrite, err = compileRewrite(f, k.UrlRewrite)
		case *waypointapi.HTTPFilter_RequestMirror:
			f = f.child("request_mirror")
			if set == backendFilters {
				return Filters{}, f.errorf("RequestMirror is not supported on a backend")
			}
			var m Mirror
			m, err = compileMirror(f, k.RequestMirror)
			out.Mirrors = append(out.Mirrors, m)
		default:
			return Filters{}, f.errorf("empty or unknown filter")
		}
		if err != nil {
			return Filters{}, err
		}
	}
	return out, nil
}

// compileHeaderModifier compiles a header modifier with canonical names.
// HTTPHeaderFilter: "Only one action for a given header name is
// permitted. Filters specifying multiple actions of the same or different
// type for any one header name are invalid", so a name may appear once in
// Set, Add and Remove together, and the order the three are applied in
// never shows.
func compileHeaderModifier(f field, m *waypointapi.HeaderModifier, request bool) (*HeaderModifier, error) {
	if m == nil {
		return nil, f.wrap(errMissing)
	}
	out := &HeaderModifier{}
	seen := make(map[string]string) // canonical name → the field that has it
	use := func(hf field, name, action string) (string, error) {
		if err := waypointapi.CheckHeaderName(name); err != nil {
			return "", hf.wrap(err)
		}
		c := canonical(name)
		if err := waypointapi.CheckModifiable(c, request); err != nil {
			return "", hf.wrap(err)
		}
		if prev, dup := seen[c]; dup {
			return "", hf.errorf("header %s already has an action (%s)", c, prev)
		}
		seen[c] = action
		return c, nil
	}
	headers := func(name string, hs []*waypointapi.Header) ([]Header, error) {
		var list []Header
		for i, h := range hs {
			hf := f.index(name, i)
			if h == nil {
				return nil, hf.wrap(errMissing)
			}
			c, err := use(hf.child("name"), h.GetName(), name)
			if err != nil {
				return nil, err
			}
			if err := waypointapi.CheckHeaderValue(h.GetValue()); err != nil {
				return nil, hf.child("value").wrap(err)
			}
			list = append(list, Header{Name: c, Value: h.GetValue()})
		}
		return list, nil
	}
	var err error
	if out.Set, err = headers("set", m.GetSet()); err != nil {
		return nil, err
	}
	if out.Add, err = headers("add", m.GetAdd()); err != nil {
		return nil, err
	}
	for i, name := range m.GetRemove() {
		c, err := use(f.index("remove", i), name, "remove")
		if err != nil {
			return nil, err
		}
		out.Remove = append(out.Remove, c)
	}
	return out, nil
}

// Redirect status codes (HTTPRequestRedirectFilter.StatusCode's enum);
// 302 is the default.
var redirectCodes = map[uint32]bool{301: true, 302: true, 303: true, 307: true, 308: true}

func compileRedirect(f field, r *waypointapi.Redirect) (*Redirect, error) {
	if r == nil {
		return nil, f.wrap(errMissing)
	}
	out := &Redirect{Scheme: r.GetScheme(), Hostname: r.GetHostname(), StatusCode: 302}
	switch out.Scheme {
	case "", "http", "https":
	default:
		return nil, f.child("scheme").errorf("unsupported scheme %q (http or https)", out.Scheme)
	}
	if out.Hostname != "" {
		if err := waypointapi.CheckHostname(out.Hostname); err != nil {
			return nil, f.child("hostname").wrap(err)
		}
	}
	var err error
	if out.Port, err = portNumber(f.child("port"), r.GetPort(), true); err != nil {
		return nil, err
	}
	if c := r.GetStatusCode(); c != 0 {
		if !redirectCodes[c] {
			return nil, f.child("status_code").errorf("unsupported redirect status %d (301, 302, 303, 307 or 308)", c)
		}
		out.StatusCode = int(c)
	}
	if r.GetHasPath() {
		if out.Path, err = compilePathModifier(f, r.GetPathType(), r.GetPath()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func compileRewrite(f field, r *waypointapi.Rewrite) (*Rewrite, error) {
	if r == nil {
		return nil, f.wrap(errMissing)
	}
	out := &Rewrite{Hostname: r.GetHostname()}
	if out.Hostname != "" {
		if err := waypointapi.CheckHostname(out.Hostname); err != nil {
			return nil, f.child("hostname").wrap(err)
		}
	}
	if r.GetHasPath() {
		var err error
		if out.Path, err = compilePathModifier(f, r.GetPathType(), r.GetPath()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compilePathModifier compiles a ReplaceFullPath (EXACT) or
// ReplacePrefixMatch (PREFIX) modifier. A full path starts with "/"; a
// prefix replacement may also be empty, which strips the prefix.
func compilePathModifier(parent field, t waypointapi.MatchType, v string) (*PathModifier, error) {
	f := parent.child("path")
	switch t {
	case waypointapi.MatchType_EXACT:
		if !strings.HasPrefix(v, "/") {
			return nil, f.errorf("replacement path %q does not start with /", v)
		}
	case waypointapi.MatchType_PREFIX:
		if v != "" && !strings.HasPrefix(v, "/") {
			return nil, f.errorf("replacement prefix %q does not start with /", v)
		}
	default:
		return nil, parent.child("path_type").errorf("unsupported path modifier type %s", matchTypeName(t))
	}
	if len(v) > waypointapi.MaxPathLen {
		return nil, f.errorf("path longer than %d bytes", waypointapi.MaxPathLen)
	}
	if err := waypointapi.CheckPathChars(v); err != nil {
		return nil, f.wrap(err)
	}
	return &PathModifier{Prefix: t == waypointapi.MatchType_PREFIX, Value: v}, nil
}

// compileMirror compiles a mirror. The proto's denominator 0 means 100 (a
// percentage); a numerator above the denominator mirrors everything and
// is stored as equal to it.
func compileMirror(f field, m *waypointapi.Mirror) (Mirror, error) {
	if m == nil {
		return Mirror{}, f.wrap(errMissing)
	}
	b, err := compileBackend(f.child("backend"), m.GetBackend(), false)
	if err != nil {
		return Mirror{}, err
	}
	out := Mirror{Backend: b, Numerator: m.GetNumerator(), Denominator: m.GetDenominator()}
	if out.Denominator == 0 {
		out.Denominator = 100
	}
	out.Numerator = min(out.Numerator, out.Denominator)
	return out, nil
}
