package ratelimit

import (
	"fmt"
	"math"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"sync"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// keyKind is what a policy's buckets are keyed by.
type keyKind uint8

const (
	keyGlobal keyKind = iota
	keyIdentity
	keyIP
	keyHeader
)

// quota is one limit's numbers, as enforced and as announced.
type quota struct {
	rate   rate
	header quotaHeader
	// perUnit and unit are what a GLOBAL limit sends as the descriptor's
	// limit override (envoyproxy/ratelimit counts fixed windows of one
	// unit).
	perUnit uint32
	unit    typev3.RateLimitUnit
}

// state is the buckets of one policy. It outlives a configuration: Update
// hands it to the next one while the policy's name, mode, limit, key and
// overrides stay the same, so that a configuration push does not refill
// every bucket.
type state struct {
	buckets *table
	// principals are the clients an override names, each with its own
	// bucket and quota (the first override naming it).
	principals map[string]*principal
}

// principal is one client an override names.
type principal struct {
	q  *quota
	mu sync.Mutex
	b  bucket
}

// limit is one RateLimit entry of a service, compiled.
type limit struct {
	name string
	// route and rule select requests: a route-level limit applies to the
	// rules of that HTTPRoute, all of them or the one named rule.
	hasRoute           bool
	routeNS, routeName string
	rule               string
	global, failDeny   bool
	key                keyKind
	header             string // canonical, for keyHeader
	quota              *quota
	st                 *state
	limited            []metric.AddOption // policy label, for the counter
	stateKey           string
}

// applies reports whether the limit covers requests routed to rule (nil
// when no route matched).
func (lim *limit) applies(rule *config.Rule) bool {
	if !lim.hasRoute {
		return true
	}
	if rule == nil || (rule.Route.Kind != "" && rule.Route.Kind != "HTTPRoute") {
		return false
	}
	return rule.Route.Namespace == lim.routeNS && rule.Route.Name == lim.routeName &&
		(lim.rule == "" || lim.rule == rule.Name)
}

// compile turns a RateLimit into a limit, and says what it had to
// change. A limit that cannot be enforced as written is enforced more
// strictly, never not at all: a zero rate refuses every request, a route
// that does not parse makes the limit cover the whole service.
func compile(rl *waypointapi.RateLimit, now int64, maxKeys int) (*limit, []string) {
	var warn []string
	lim := &limit{
		name:     rl.GetPolicy(),
		global:   rl.GetMode() == waypointapi.RateLimit_GLOBAL,
		failDeny: rl.GetFailureMode() != waypointapi.RateLimit_ALLOW,
	}
	if lim.name == "" {
		warn = append(warn, "no policy name")
	}
	if m := rl.GetMode(); m != waypointapi.RateLimit_LOCAL && m != waypointapi.RateLimit_GLOBAL {
		warn = append(warn, fmt.Sprintf("unknown mode %d: enforced locally", m))
	}
	if f := rl.GetFailureMode(); f != waypointapi.RateLimit_ALLOW && f != waypointapi.RateLimit_DENY {
		warn = append(warn, fmt.Sprintf("unknown failure mode %d: DENY", f))
	}
	if route := rl.GetRoute(); route != "" {
		ns, name, ok := strings.Cut(route, "/")
		if ok && ns != "" && name != "" {
			lim.hasRoute, lim.routeNS, lim.routeName, lim.rule = true, ns, name, rl.GetRule()
		} else {
			warn = append(warn, fmt.Sprintf("route %q is not <namespace>/<name>: the limit covers the whole service", route))
		}
	} else if rl.GetRule() != "" {
		warn = append(warn, fmt.Sprintf("rule %q without a route: the limit covers the whole service", rl.GetRule()))
	}
	switch k := rl.GetKey(); k.GetType() {
	case waypointapi.RateLimitKey_GLOBAL:
	case waypointapi.RateLimitKey_SOURCE_IDENTITY:
		lim.key = keyIdentity
	case waypointapi.RateLimitKey_SOURCE_IP:
		lim.key = keyIP
	case waypointapi.RateLimitKey_HEADER:
		lim.key, lim.header = keyHeader, http.CanonicalHeaderKey(k.GetHeader())
		if err := waypointapi.CheckHeaderName(k.GetHeader()); err != nil {
			warn = append(warn, fmt.Sprintf("key header: %v: every request shares the bucket of the missing header", err))
		}
	default:
		warn = append(warn, fmt.Sprintf("unknown key type %d: one bucket for all clients", k.GetType()))
	}

	var w []string
	lim.quota, w = newQuota(lim.name, lim.global, rl.GetRequests(), rl.GetFillIntervalMs(), rl.GetBurst())
	warn = append(warn, w...)

	// The state key names everything the buckets depend on.
	var fp strings.Builder
	fp.WriteString(lim.name)
	fmt.Fprintf(&fp, "\x00%t|%d|%s|%d/%d/%d", lim.global, lim.key, lim.header, rl.GetRequests(), rl.GetFillIntervalMs(), rl.GetBurst())
	principals := map[string]*principal{}
	for i, o := range rl.GetOverrides() {
		q, w := newQuota(lim.name, lim.global, o.GetRequests(), o.GetFillIntervalMs(), o.GetBurst())
		for _, s := range w {
			warn = append(warn, fmt.Sprintf("override %d: %s", i, s))
		}
		fmt.Fprintf(&fp, "|%d/%d/%d:", o.GetRequests(), o.GetFillIntervalMs(), o.GetBurst())
		for _, p := range o.GetPrincipals() {
			fp.WriteString(strconv.Quote(p))
			if p == "" {
				continue // no client has the empty identity
			}
			if _, dup := principals[p]; !dup {
				principals[p] = &principal{q: q, b: q.rate.fill(now)}
			}
		}
	}
	lim.stateKey = fp.String()
	lim.st = &state{buckets: newTable(keysFor(lim.key, maxKeys)), principals: principals}
	lim.limited = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(LabelPolicy, lim.name)))}
	return lim, warn
}

// keysFor is how many buckets a policy keyed by k may hold.
func keysFor(k keyKind, maxKeys int) int {
	if k == keyGlobal {
		return 1
	}
	return maxKeys
}

// Units of envoyproxy/ratelimit's fixed windows, longest last, with their
// length in milliseconds.
var units = []struct {
	unit typev3.RateLimitUnit
	ms   uint64
}{
	{typev3.RateLimitUnit_SECOND, 1000},
	{typev3.RateLimitUnit_MINUTE, 60 * 1000},
	{typev3.RateLimitUnit_HOUR, 3600 * 1000},
	{typev3.RateLimitUnit_DAY, 86400 * 1000},
	{typev3.RateLimitUnit_MONTH, 30 * 86400 * 1000},
	{typev3.RateLimitUnit_YEAR, 365 * 86400 * 1000},
}

// unitSeconds is the length of a window of unit u in seconds, 0 for a
// unit this package does not know. u is an envoy.type.v3.RateLimitUnit or
// the service's RateLimitResponse.RateLimit.Unit: they share numbers, and
// the latter adds WEEK (7).
func unitSeconds[U ~int32](u U) uint64 {
	switch int32(u) {
	case 7:
		return 7 * 86400
	case 0:
		return 0
	}
	for _, x := range units {
		if int32(x.unit) == int32(u) {
			return x.ms / 1000
		}
	}
	return 0
}

// newQuota makes the quota of requests per intervalMs with burst tokens
// (0: requests). A zero rate refuses every request.
func newQuota(name string, global bool, requests, intervalMs, burst uint32) (*quota, []string) {
	var warn []string
	q := &quota{unit: typev3.RateLimitUnit_SECOND}
	window := (uint64(intervalMs) + 999) / 1000
	if requests == 0 || intervalMs == 0 {
		warn = append(warn, fmt.Sprintf("%d requests per %d ms: every request is refused", requests, intervalMs))
		q.header = newQuotaHeader(name, 0, max(window, 1))
		return q, warn
	}
	if burst == 0 {
		burst = requests
	}
	q.rate = rate{n: uint64(requests), interval: uint64(intervalMs) * 1e6, burst: uint64(burst)}
	if !global {
		// Announce the rate over whole seconds: the same rate, and the
		// configured one whenever the interval is whole seconds.
		q.header = newQuotaHeader(name, scale(uint64(requests), window*1000, uint64(intervalMs)), window)
		return q, warn
	}
	// The longest unit no longer than the interval that still allows a
	// request per window; a shorter interval counts per second.
	i := 0
	for i+1 < len(units) && units[i+1].ms <= uint64(intervalMs) {
		i++
	}
	n := scale(uint64(requests), units[i].ms, uint64(intervalMs))
	if n == 0 && i+1 < len(units) {
		i++
		n = scale(uint64(requests), units[i].ms, uint64(intervalMs))
	}
	if burst != requests {
		warn = append(warn, fmt.Sprintf("burst %d: the rate-limit service counts fixed windows, without a burst", burst))
	}
	if units[i].ms != uint64(intervalMs) {
		warn = append(warn, fmt.Sprintf("%d requests per %d ms: sent to the rate-limit service as %d per %s", requests, intervalMs, n, units[i].unit))
	}
	q.perUnit, q.unit = uint32(min(n, math.MaxUint32)), units[i].unit
	q.header = newQuotaHeader(name, uint64(q.perUnit), units[i].ms/1000)
	return q, warn
}

// scale is a×b/c rounded down, without overflow (c > 0).
func scale(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, c)
	return q
}
