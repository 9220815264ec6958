package config

import (
	"net/netip"
	"regexp"
	"slices"
	"time"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Waypoint is one waypoint's compiled configuration. It is immutable once
// Compile returns it: the proxy reads it from many goroutines without
// locks, and a new configuration is a new Waypoint.
type Waypoint struct {
	Name, Namespace string
	TrustDomain     string
	// Services are the services bound to the waypoint, in the order
	// received (namespace, then hostname).
	Services []*Service
	// Policies target the waypoint's Gateway and apply to every request
	// and connection it serves, before the service's own.
	Policies []*policy.Policy

	byVIP    map[netip.Addr]*Service
	byKey    map[string]*Service
	warnings []*Warning
}

// Warnings lists, in resource order, the problems Compile contained
// instead of rejecting the resource, each with its field path and what was
// left out or replaced. The caller should log them: they are the only
// trace of a rule, route, service or policy that does not apply as
// written. The slice is the caller's.
func (w *Waypoint) Warnings() []*Warning { return slices.Clone(w.warnings) }

// ServiceByVIP returns the service with cluster IP ip, or nil.
func (w *Waypoint) ServiceByVIP(ip netip.Addr) *Service { return w.byVIP[ip.Unmap()] }

// Service returns the service with key "<namespace>/<hostname>", or nil.
func (w *Waypoint) Service(key string) *Service { return w.byKey[key] }

// Service is a Kubernetes Service bound to the waypoint, with its routes
// and policies.
type Service struct {
	Name, Namespace, Hostname string
	VIPs                      []netip.Addr
	Ports                     []Port
	// HTTP and GRPC hold the service's producer HTTPRoutes and
	// GRPCRoutes (routes in the service's own namespace, for every
	// client), as matches in Gateway API precedence order; nil when there
	// are none.
	HTTP, GRPC *RouteTable
	// Consumers holds the consumer routes (GEP-1294) by the namespace they
	// are in and apply to; nil when there are none. A namespace's entry
	// never holds another namespace's routes, and the service's own
	// namespace has none: its clients use the producer routes.
	Consumers map[string]*ConsumerRoutes
	// RateLimits are passed through as received (the rate-limit issue
	// compiles them).
	RateLimits []*waypointapi.RateLimit
	// Policies target the service; they apply after the waypoint's.
	Policies []*policy.Policy
}

// ConsumerRoutes are the routes one consumer namespace attached to a
// service in another namespace, in the same form as the producer's.
// GEP-1294 ("Multiple routes for a Service"): requests from that
// namespace use this group instead of the producer's, and the groups are
// never merged with each other.
type ConsumerRoutes struct {
	HTTP, GRPC *RouteTable
}

// HasPort reports whether a route of c applies to requests sent to port.
// A nil c has none.
func (c *ConsumerRoutes) HasPort(port uint16) bool {
	return c != nil && (c.HTTP.HasPort(port) || c.GRPC.HasPort(port))
}

// ConsumerRoutes returns the consumer routes of namespace ns, or nil.
func (s *Service) ConsumerRoutes(ns string) *ConsumerRoutes {
	if ns == "" {
		return nil
	}
	return s.Consumers[ns]
}

// Key is "<namespace>/<hostname>", the key of the service in the mesh
// state (meshstate.Service.Key).
func (s *Service) Key() string { return s.Namespace + "/" + s.Hostname }

// Port returns the service port numbered port.
func (s *Service) Port(port uint16) (Port, bool) {
	for _, p := range s.Ports {
		if p.Port == port {
			return p, true
		}
	}
	return Port{}, false
}

// Protocol is how the waypoint handles a service port's traffic.
type Protocol int

const (
	// Detect: no appProtocol or name says; the first bytes decide
	// (HTTP/1.1, HTTP/2 with prior knowledge, or anything else as TCP).
	Detect Protocol = iota
	// HTTP is HTTP/1.1 (appProtocol http, name http or http-*).
	HTTP
	// HTTP2 is HTTP/2 with prior knowledge (appProtocol http2, h2c,
	// kubernetes.io/h2c; name http2 or http2-*).
	HTTP2
	// GRPC is gRPC over HTTP/2 (appProtocol grpc, grpc-web; name grpc or
	// grpc-*).
	GRPC
	// TCP is passed through at L4 (appProtocol tcp, tls, mysql, ...; name
	// tcp-*, tls-*, ...): any appProtocol the waypoint does not handle.
	TCP
)

func (p Protocol) String() string {
	switch p {
	case Detect:
		return "detect"
	case HTTP:
		return "http"
	case HTTP2:
		return "http2"
	case GRPC:
		return "grpc"
	case TCP:
		return "tcp"
	}
	return "unknown"
}

// Port is a service port.
type Port struct {
	Name string
	Port uint16
	// TargetPort is 0 when the Service names it: each endpoint's own
	// mapping has the number (meshstate.Service.EndpointPort).
	TargetPort  uint16
	AppProtocol string
	Protocol    Protocol
}

// RouteTable is a service's routes of one kind (HTTPRoute or GRPCRoute),
// flattened into one entry per match and sorted by Gateway API precedence,
// so that the first entry that matches a request wins.
type RouteTable struct {
	Entries []Entry
}

// HasPort reports whether some entry of t applies to requests sent to
// port. A nil table has none.
func (t *RouteTable) HasPort(port uint16) bool {
	if t == nil {
		return false
	}
	for i := range t.Entries {
		if p := t.Entries[i].Port; p == 0 || p == port {
			return true
		}
	}
	return false
}

// Entry is one match of one rule.
type Entry struct {
	// Port restricts the entry to one service port (the route's
	// parentRef port); 0 means every port.
	Port  uint16
	Match Match
	Rule  *Rule
}

// Match is one HTTPRouteMatch or GRPCRouteMatch: every condition set must
// hold.
type Match struct {
	Path *PathMatch
	// Method is empty for any method.
	Method  string
	Headers []ValueMatch
	Query   []ValueMatch
	// GRPC is set for GRPCRoute matches that name a service or a method;
	// a GRPCRoute match has no Path.
	GRPC *GRPCMethodMatch
}

// PathMatchType is how a path is compared.
type PathMatchType int

const (
	PathExact PathMatchType = iota
	// PathPrefix matches whole segments: "/foo" matches "/foo" and
	// "/foo/bar", not "/foobar".
	PathPrefix
	PathRegex
)

// PathMatch compares the normalized request path, in escaped form (the
// form Gateway API writes path values in and the backend receives).
type PathMatch struct {
	Type  PathMatchType
	Value string
	// Regex is compiled for PathRegex; it must match the whole path.
	Regex *regexp.Regexp
}

// ValueMatch compares a header (Name lower case) or query parameter (Name
// as written: query names are case-sensitive).
type ValueMatch struct {
	Name  string
	Value string
	// Regex is set for RegularExpression matches (whole value).
	Regex *regexp.Regexp
	// Key is a header's http.Header key (the canonical form of Name), so
	// that looking it up costs no allocation; "" for query parameters.
	// Compile sets it; when it is empty a header match canonicalizes Name
	// itself.
	Key string
}

// GRPCMethodMatch compares the /<service>/<method> of a gRPC request. An
// empty Service or Method matches any.
type GRPCMethodMatch struct {
	Service, Method string
	// ServiceRegex and MethodRegex are set for RegularExpression matches.
	ServiceRegex, MethodRegex *regexp.Regexp
}

// RouteRef names the route a rule belongs to.
type RouteRef struct {
	// Kind is "HTTPRoute" or "GRPCRoute".
	Kind            string
	Namespace, Name string
}

func (r RouteRef) String() string { return r.Namespace + "/" + r.Name }

// Rule is one rule of a route: what to do with a matching request.
type Rule struct {
	Route RouteRef
	// Name is the rule's name; "" when unnamed.
	Name string
	// Index is the rule's position in its route; -1 for the rule that
	// stands for a whole route that does not compile (RouteFailsClosed).
	Index int
	// Backends share the requests by weight. None means the rule has no
	// usable backend: its requests get 500, unless a redirect answers
	// them.
	Backends []Backend
	Filters  Filters
	// RequestTimeout bounds the whole request, retries included;
	// BackendTimeout each attempt. 0 means none.
	RequestTimeout, BackendTimeout time.Duration
	// Retry is the rule's retry policy (HTTPRoute retry); nil means the
	// waypoint's default.
	Retry *Retry
}

// Backend is a weighted Service backend.
type Backend struct {
	Name, Namespace, Hostname string
	// Port is the service port to use; 0 means the request's.
	Port uint16
	// Weight 0 receives nothing.
	Weight uint32
	// Filters apply to requests sent to this backend only (header
	// modifiers).
	Filters Filters

	// key is Key, made once by Compile: the proxy asks for it on every
	// request.
	key string
}

// ServiceBackend is the whole of svc as a backend, for requests that no
// route sends elsewhere, with its key made once.
func ServiceBackend(svc *Service) Backend {
	b := Backend{Name: svc.Name, Namespace: svc.Namespace, Hostname: svc.Hostname, Weight: 1}
	b.key = b.Namespace + "/" + b.Hostname
	return b
}

// Key is the backend service's key in the mesh state.
func (b *Backend) Key() string {
	if b.key != "" {
		return b.key
	}
	return b.Namespace + "/" + b.Hostname
}

// Filters are a rule's (or a backend's) request and response edits.
type Filters struct {
	RequestHeaders  *HeaderModifier
	ResponseHeaders *HeaderModifier
	Redirect        *Redirect
	Rewrite         *Rewrite
	Mirrors         []Mirror
}

// HeaderModifier sets, adds and removes header fields. Names are in
// canonical form (http.CanonicalHeaderKey).
type HeaderModifier struct {
	Set, Add []Header
	Remove   []string
}

// Header is one header field.
type Header struct {
	Name, Value string
}

// PathModifier replaces the whole path, or the prefix a PathPrefix match
// matched.
type PathModifier struct {
	// Prefix: replace the matched prefix; otherwise the full path.
	Prefix bool
	Value  string
}

// Redirect answers with a redirect instead of forwarding. Empty fields
// keep the request's value; StatusCode is 301, 302, 303, 307 or 308.
type Redirect struct {
	Scheme, Hostname string
	Port             uint16
	Path             *PathModifier
	StatusCode       int
}

// Rewrite changes the request before it is forwarded.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// Mirror sends a copy of Numerator/Denominator of the requests to Backend.
type Mirror struct {
	Backend                Backend
	Numerator, Denominator uint32
}

// Retry is an HTTPRoute retry policy (GEP-1731).
type Retry struct {
	// Attempts is the number of retries after the first try.
	Attempts int
	// Codes are HTTP status codes that are retried.
	Codes []int
	// Backoff is the base delay between tries.
	Backoff time.Duration
}
